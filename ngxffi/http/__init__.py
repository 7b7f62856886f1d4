"""HTTP on the event core (≈ src/http): messages, parsing, the connection state
machine, the server, the C fast path, static files, stub_status, and the service
``ngxffi serve`` runs in its workers."""
