"""The benchmark results as one PNG: ``benchmarks/results/latest.png``.

Six panels from the medians run.py saves in ``latest.json``: the server's user and
kernel CPU µs per request with keep-alive, with connection churn, for the static files
and for a user's Python handler (one worker, pinned; the handler's user-CPU target
drawn), req/s per server in each HTTP run, and bytes per idle keep-alive connection
with ngxffi's target. A run the JSON lacks (the Python handler, when ``ngxffi serve``
did not know ``app``) leaves its panel saying so. ``python benchmarks/chart.py``
redraws it from the JSON. matplotlib (the ``bench`` extra) is imported only here,
when drawing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idle_memory import TARGETS
from servers import APP_TARGET_US, LABELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RESULTS = Path(__file__).parent / "results"
RUNS = {
    "keepalive": "keep-alive",
    "churn": "churn",
    "two_workers": "keep-alive, 2 workers",
    "static_1k": "static 1 KiB",
    "static_64k": "static 64 KiB",
    "app": "Python app",
}
WIDTH = 0.8  # of each server's group of bars


def grouped(ax: Axes, groups: dict[str, dict[str, float]], ylabel: str) -> None:
    """Bars per server, one per series; ``groups`` maps series to server to value."""
    kinds = list(dict.fromkeys(k for values in groups.values() for k in values))
    width = WIDTH / len(groups)
    for i, (series, values) in enumerate(groups.items()):
        xs = [kinds.index(k) + (i - (len(groups) - 1) / 2) * width for k in values]
        ax.bar(xs, list(values.values()), width, label=series)
    ax.set_xticks(
        range(len(kinds)), [LABELS[k] for k in kinds], rotation=20, ha="right"
    )
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")


def cpu_panel(
    ax: Axes, runs: dict[str, dict[str, dict[str, float]] | None], title: str
) -> None:
    """User and kernel CPU per request of each server, for each run of ``runs``
    (series named by its key, "" for a lone run); None: the run is missing."""
    ax.set_title(title)
    present = {name: run for name, run in runs.items() if run is not None}
    if not present:
        ax.text(0.5, 0.5, "not measured in this run", ha="center")
        ax.set_axis_off()
        return
    groups = {
        f"{name} {part}".strip(): {k: m[f"{part}_us"] for k, m in run.items()}
        for name, run in present.items()
        for part in ("user", "kernel")
    }
    grouped(ax, groups, "server CPU µs per request")


def app_panel(ax: Axes, run: dict[str, dict[str, float]] | None) -> None:
    cpu_panel(ax, {"": run}, "A user's Python handler, keep-alive, one pinned worker")
    if run is not None:
        ax.axhline(
            APP_TARGET_US,
            color="gray",
            linestyle="--",
            label=f"Python app's user target ({APP_TARGET_US} µs)",
        )
        ax.legend(fontsize="small")


def rate_panel(ax: Axes, http: dict[str, dict[str, dict[str, float]]]) -> None:
    runs = {
        RUNS[key]: {k: m["rate"] for k, m in run.items()} for key, run in http.items()
    }
    grouped(ax, runs, "requests/s")
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the legend
    ax.set_title("Throughput (wrk, medians)")


def memory_panel(ax: Axes, memory: dict[str, Any]) -> None:
    per_connection = {k: m["per_connection"] for k, m in memory["servers"].items()}
    grouped(ax, {"bytes per connection": per_connection}, "bytes")
    target = TARGETS["per_connection"]
    ax.axhline(
        target, color="gray", linestyle="--", label=f"ngxffi target ({target} B)"
    )
    ax.legend(fontsize="small")
    ax.set_title(f"RSS per idle keep-alive connection ({memory['connections']:,})")


def render(data: dict[str, Any], path: Path) -> None:
    """Draw ``data`` (latest.json's content) into the PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http = data["http"]
    fig, axes = plt.subplots(3, 2, figsize=(13, 13), layout="constrained")
    cpu_panel(axes[0][0], {"": http["keepalive"]}, "Keep-alive, one pinned worker")
    cpu_panel(axes[0][1], {"": http["churn"]}, "Connection churn, one pinned worker")
    static = {"1 KiB": http.get("static_1k"), "64 KiB": http.get("static_64k")}
    cpu_panel(axes[1][0], static, "Static files, keep-alive, one pinned worker")
    app_panel(axes[1][1], http.get("app"))
    rate_panel(axes[2][0], http)
    memory_panel(axes[2][1], data["idle_memory"])
    fig.suptitle(f"ngxffi benchmarks — {data['machine']}, {data['date']}", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    render(json.loads((RESULTS / "latest.json").read_text()), RESULTS / "latest.png")
