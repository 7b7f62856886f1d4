"""How a run is shown: the table (one column per server, side by side), JSON Lines,
and the live progress line on a terminal."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from ngxffi.lab.clients import Outcome
from ngxffi.lab.result import JSON_KEYS, ExhaustResult
from ngxffi.lab.sampler import Sample

# The table's rows: the JSON keys but the command (too long for a column: shown
# above the table) and the empty ones
_ROWS = tuple(key for key in JSON_KEYS if key != "command")
# what a server that never started has no figure for
_MEASURED = set(JSON_KEYS[JSON_KEYS.index("served") :]) - {"second_wave", "inject"}
# rows shown only when some server has something there
_RARE = {"error", "lab_errors", "exit_status", "inject", "policy", "resume", "port"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    return str(value)


def _value(result: ExhaustResult, key: str) -> str:
    if not result.started and key in _MEASURED:
        return "-"
    return _cell(result.to_json()[key])


def table(results: list[ExhaustResult]) -> str:
    """Rows of keys, a column per server; an error (a server that never listened)
    is written under the table, whole."""
    rows = [(key, [_value(r, key) for r in results]) for key in _ROWS]
    rows = [
        (k, cells)
        for k, cells in rows
        if k != "error" and not (k in _RARE and set(cells) <= {"-", "0"})
    ]
    key_w = max(len(k) for k, _ in rows)
    widths = [max(len(cells[i]) for _, cells in rows) for i in range(len(results))]
    lines = [
        f"{k:<{key_w}}  "
        + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        for k, cells in rows
    ]
    lines += [f"{r.server}: {r.error}" for r in results if r.error]
    return "\n".join(lines)


def json_lines(results: list[ExhaustResult]) -> str:
    """One JSON object per server, one per line (a single object for one server)."""
    return "\n".join(json.dumps(r.to_json()) for r in results)


class Progress:
    """A status line rewritten in place on a terminal, at most every 0.25 s:
    the server, the wave, its clients so far, the fds against the limit, CPU."""

    def __init__(self, server: str, stream: IO[str] = sys.stderr) -> None:
        self.server, self.stream = server, stream
        self.last = 0.0

    def __call__(self, wave: str, out: Outcome, point: Sample) -> None:
        now = time.monotonic()
        if now - self.last < 0.25:
            return
        self.last = now
        line = (
            f"{self.server}: {wave} {point.t:5.1f}s  served {out.served}  "
            f"reset {out.reset}  timed out {out.timed_out}  refused {out.refused}  "
            f"fds {point.fds}/{point.limit}  cpu {point.cpu_percent:.0f}%"
        )
        self.stream.write(f"\r\x1b[K{line}")
        self.stream.flush()

    def done(self) -> None:
        """Clear the line, so the table starts on a clean one."""
        self.stream.write("\r\x1b[K")
        self.stream.flush()
