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

from ngxffi.lab.result import ExhaustResult
from ngxffi.lab.target import LabError

_ROWS = ("open fds", "CPU %", "wake-ups/s", "clients")
# each its colour and line, so that two that coincide (a server that resets every
# client at once) both show
_ENDS = (
    ("served", "tab:green", "-"),
    ("reset", "tab:red", "--"),
    ("timed_out", "tab:orange", ":"),
    ("refused", "tab:blue", "-."),
)


def require(path: Path) -> None:
    """:class:`LabError`, before a run, when matplotlib is missing (with the command
    that installs it) or cannot write ``path`` (no such directory, not a format it
    knows)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as e:
        raise LabError(
            "--plot needs matplotlib, an optional extra: pip install 'ngxffi[plot]' "
            f"({e})"
        ) from None
    if not path.parent.is_dir():
        raise LabError(f"--plot {path}: no directory {path.parent}")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise LabError(f"--plot {path}: the name ends in one of .{', .'.join(formats)}")


def _column(axes: Any, result: ExhaustResult) -> None:
    t = [s.t for s in result.timeline]
    fds, cpu, woke, ends = axes
    fds.plot(t, [s.fds for s in result.timeline], label="the fullest process")
    fds.plot(
        t,
        [s.limit for s in result.timeline],
        color="black",
        linewidth=0.8,
        label="its soft RLIMIT_NOFILE",
    )
    fds.legend(loc="lower right", fontsize="small")
    cpu.plot(t, [s.cpu_percent for s in result.timeline], color="tab:purple")
    woke.plot(t, [s.wakeups_per_s for s in result.timeline], color="tab:brown")
    for kind, color, style in _ENDS:
        times = [when for when, k in result.ends if k == kind]
        if times:
            ends.step(
                times,
                list(accumulate(1 for _ in times)),
                where="post",
                color=color,
                linestyle=style,
                label=kind.replace("_", " "),
            )
    if result.ends:
        ends.legend(loc="upper left", fontsize="small")
    for ax in axes:
        ax.set_ylim(bottom=0)
        for boundary in result.waves:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    fds.set_title(f"{result.server} (nofile {result.nofile}, {result.clients} clients)")
    ends.set_xlabel("seconds")


def plot(results: list[ExhaustResult], path: Path) -> None:
    """Draw ``results`` into the PNG at ``path``."""
    require(path)
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
