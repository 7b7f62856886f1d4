"""HTTP on the event core (≈ src/http): messages, parsing, the connection state
machine, the server, the C fast path, static files, stub_status, a user's handler
(``app``), and the service ``ngxffi serve`` runs in its workers.

What an app's handler needs is here: ``from ngxffi.http import Request, Response``
(both of :mod:`ngxffi.http.message`).
"""

from ngxffi.http.message import Request, Response

__all__ = ["Request", "Response"]
