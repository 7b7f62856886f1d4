"""nginx's log levels on top of the stdlib ``logging`` module (≈ src/core/ngx_log.c).

Everything ngxffi logs goes to the ``ngxffi`` logger with nginx's eight levels, mapped
onto logging's numbers so that handlers and filters work as usual: ``debug`` 10,
``info`` 20, ``notice`` 25, ``warn`` 30, ``error`` 40, ``crit`` 50, ``alert`` 55,
``emerg`` 60. Messages carry nginx's wording, with ``(errno: strerror)`` appended as
``ngx_log_error`` does when an error number is given.
"""

from __future__ import annotations

import logging
import os
import time

DEBUG = logging.DEBUG
INFO = logging.INFO
NOTICE = 25
WARN = logging.WARNING
ERR = logging.ERROR
CRIT = logging.CRITICAL
ALERT = 55
EMERG = 60

LEVELS = {
    "debug": DEBUG,
    "info": INFO,
    "notice": NOTICE,
    "warn": WARN,
    "error": ERR,
    "crit": CRIT,
    "alert": ALERT,
    "emerg": EMERG,
}

# Only the levels logging lacks get names; renaming the standard ones would change
# every other logger of the process. nginx's spelling is LEVELS' keys.
for _name, _level in (("NOTICE", NOTICE), ("ALERT", ALERT), ("EMERG", EMERG)):
    logging.addLevelName(_level, _name)

logger = logging.getLogger("ngxffi")


def log_error(level: int, message: str, err: int = 0) -> None:
    """Log ``message`` at an nginx level. Imitates ngx_log_error (src/core/ngx_log.c):
    a non-zero ``err`` appends ``(err: strerror)``."""
    if logger.isEnabledFor(level):
        if err:
            message = f"{message} ({err}: {os.strerror(err)})"
        logger.log(level, message)


_NAMES = {level: name for name, level in LEVELS.items()}


class NginxFormatter(logging.Formatter):
    """nginx's error_log line: ``2026/11/23 12:00:00 [warn] 1234#0: message``."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = _NAMES.get(record.levelno, record.levelname.lower())
        return f"{when} [{level}] {record.process}#0: {record.getMessage()}"


def configure(target: str, level: str) -> None:
    """Send ngxffi's log to ``target`` ("stderr" or a file path) from ``level`` up,
    as nginx's ``error_log FILE LEVEL``."""
    handler: logging.Handler = (
        logging.StreamHandler() if target == "stderr" else logging.FileHandler(target)
    )
    handler.setFormatter(NginxFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
