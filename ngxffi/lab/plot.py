"""``--plot FILE.png``: a timeline per server, one column each, four rows sharing the
time axis — open fds against the limit, CPU %, wake-ups per second, and the clients
served, reset and timed out so far — with the wave boundaries as dashed lines.

matplotlib is an optional extra (``pip install 'ngxffi[plot]'``); :func:`require`
says so before a run starts rather than after it.
"""

from __future__ import annotations

from itertools import accumulate
from pathlib import Path
from typing import Any

from ngxffi.lab.experiment import ExhaustResult
from ngxffi.lab.target import LabError

_ROWS = ("open fds", "CPU %", "wake-ups/s", "clients")
_ENDS = (("served", "tab:green"), ("reset", "tab:red"), ("timed_out", "tab:orange"))


def require() -> None:
    """:class:`LabError` with the command to run when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise LabError(
            "--plot needs matplotlib, an optional extra: pip install 'ngxffi[plot]' "
            f"({e})"
        ) from None


def _column(axes: Any, result: ExhaustResult) -> None:
    t = [s.t for s in result.timeline]
    fds, cpu, woke, ends = axes
    fds.plot(t, [s.fds for s in result.timeline], label="most in one process")
    fds.axhline(result.nofile, color="black", linewidth=0.8, label="RLIMIT_NOFILE")
    fds.legend(loc="lower right", fontsize="small")
    cpu.plot(t, [s.cpu_percent for s in result.timeline], color="tab:purple")
    woke.plot(t, [s.wakeups_per_s for s in result.timeline], color="tab:brown")
    for kind, color in _ENDS:
        times = [when for when, k in result.ends if k == kind]
        if times:
            ends.step(
                times,
                list(accumulate(1 for _ in times)),
                where="post",
                color=color,
                label=kind.replace("_", " "),
            )
    if result.ends:
        ends.legend(loc="upper left", fontsize="small")
    for ax in axes:
        for boundary in result.waves:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    fds.set_title(f"{result.server} (nofile {result.nofile}, {result.clients} clients)")
    ends.set_xlabel("seconds")


def plot(results: list[ExhaustResult], path: Path) -> None:
    """Draw ``results`` into the PNG at ``path``."""
    require()
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    started = [r for r in results if r.started]
    if not started:
        raise LabError("--plot: no server started, nothing to draw")
    fig, grid = plt.subplots(
        len(_ROWS),
        len(started),
        sharex="col",
        squeeze=False,
        figsize=(4.5 * len(started) + 1, 9),
        constrained_layout=True,
    )
    for col, result in enumerate(started):
        _column(grid[:, col], result)
    for row, label in enumerate(_ROWS):
        grid[row, 0].set_ylabel(label)
    fig.savefig(path, dpi=100)
    plt.close(fig)
