"""ngxffi: nginx's event core for Python, on the real Linux syscalls through cffi.

The layers, bottom up (each only calls the ones below it):

* ``ngxffi.ffi`` / ``ngxffi.lib``: the raw cffi binding built by ``build_ffi.py`` —
  syscalls, ``struct epoll_event``, the C-layout ``ngx_connection_t``/``ngx_event_t``
  and every constant, with the values the C compiler saw;
* ``ngxffi.os``: errno-checked, EINTR-safe wrappers (≈ nginx's ``src/os/unix``);
* ``ngxffi.probe``: what this kernel supports (EPOLLRDHUP, EPOLLEXCLUSIVE, accept4).
"""

from ngxffi import os, probe, sockaddr
from ngxffi._ngx import ffi, lib
from ngxffi._version import __version__

__all__ = ["__version__", "ffi", "lib", "os", "probe", "sockaddr"]
