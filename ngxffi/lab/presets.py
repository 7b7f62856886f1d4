"""The built-in servers of ``ngxffi exhaust --server NAME``: ngxffi's and asyncio's
(:mod:`ngxffi.lab.servers`, in a child) and nginx's, each sized so that the fds run
out before its connections do (nginx's ``worker_connections`` and the ngxffi cycle's
pool are above the limit)."""

from __future__ import annotations

import os
import shutil
import sys

from ngxffi.event.listening import Listening
from ngxffi.lab.target import LabError, Target

PRESETS = {
    "ngxffi": "ngxffi's event core: event_accept, the EMFILE policy of --policy",
    "asyncio": "an asyncio.Protocol server on the default event loop",
    "nginx": "nginx itself (return 200), one worker under a master, if installed",
}

NGINX_CONF = """daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
events { worker_connections CONNECTIONS; }
http {
    access_log off;
    server { listen 127.0.0.1:{port}; location / { return 200 "ok\\n"; } }
}
"""


def _connections(nofile: int) -> int:
    """A pool that the fds run out before: the limit, and room to spare."""
    return max(1024, nofile + 64)


def _nginx(nofile: int) -> Target:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    nginx = shutil.which("nginx", path=path)
    if nginx is None:
        raise LabError("server 'nginx': nginx is not installed (apt-get install nginx)")
    conf = NGINX_CONF.replace("CONNECTIONS", str(_connections(nofile)))
    argv = (nginx, "-p", "{tmp}", "-e", "stderr", "-c", "{tmp}/nginx.conf")
    return Target("nginx", argv, files=(("nginx.conf", conf),))


def preset(
    name: str,
    policy: str = Listening.emfile_policy,
    resume: bool = True,
    nofile: int = 64,
) -> Target:
    """A built-in server by name (:data:`PRESETS`) for a run under ``nofile``;
    ``policy`` and ``resume`` are the ngxffi server's EMFILE policy and resume rule."""
    servers = (sys.executable, "-m", "ngxffi.lab.servers")
    if name == "ngxffi":
        mode = "resume" if resume else "no-resume"
        argv = (*servers, "ngxffi", "{port}", policy, mode, str(_connections(nofile)))
        return Target(name, argv, policy=policy, resume=resume)
    if name == "asyncio":
        return Target(name, (*servers, "asyncio", "{port}"))
    if name == "nginx":
        return _nginx(nofile)
    raise LabError(f"no built-in server {name!r}: choose one of {', '.join(PRESETS)}")
