"""Processes: the master and its workers (≈ src/os/unix/ngx_process*.c)."""
