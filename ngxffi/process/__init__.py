"""Processes (≈ src/os/unix/ngx_process*.c): one process or a master and its workers,
shared memory and the accept mutex. Runs on the event core; knows nothing of HTTP."""
