"""The benchmark results as one PNG: ``benchmarks/results/latest.png``.

Four panels from the medians run.py saves in ``latest.json``: the server's user and
kernel CPU µs per request with keep-alive and with connection churn (one worker,
pinned), req/s per server in each HTTP run, and bytes per idle keep-alive connection
with ngxffi's target. ``python benchmarks/chart.py`` redraws it from the JSON.
matplotlib (the ``bench`` extra) is imported only here, when drawing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idle_memory import TARGETS
from servers import LABELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RESULTS = Path(__file__).parent / "results"
RUNS = {
    "keepalive": "keep-alive",
    "churn": "churn",
    "two_workers": "keep-alive, 2 workers",
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


def cpu_panel(ax: Axes, run: dict[str, dict[str, float]], title: str) -> None:
    grouped(
        ax,
        {
            "user": {k: m["user_us"] for k, m in run.items()},
            "kernel": {k: m["kernel_us"] for k, m in run.items()},
        },
        "server CPU µs per request",
    )
    ax.set_title(title)


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

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    cpu_panel(axes[0][0], data["http"]["keepalive"], "Keep-alive, one pinned worker")
    cpu_panel(axes[0][1], data["http"]["churn"], "Connection churn, one pinned worker")
    rate_panel(axes[1][0], data["http"])
    memory_panel(axes[1][1], data["idle_memory"])
    fig.suptitle(f"ngxffi benchmarks — {data['machine']}, {data['date']}", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    render(json.loads((RESULTS / "latest.json").read_text()), RESULTS / "latest.png")
