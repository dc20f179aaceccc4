"""Figures of doll's reports, drawn by matplotlib (installed with captum): axes with ticks
and units, legends. One module, so the demo's report and later studies look alike.

Uses matplotlib's object API (``Figure`` + the Agg canvas), not pyplot: no global state, no
display needed, safe in threads.
"""
from __future__ import annotations

import io
from pathlib import Path

from doll.utils import atomic_path


def line_chart(path: str | Path, series: dict[str, tuple[list, list]], *, xlabel: str, ylabel: str, title: str,
               ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """A PNG line chart: ``series`` maps a legend entry to its (x, y) lists (None y values are
    skipped). Written atomically to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    for k, (name, (xs, ys)) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and x is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linestyle=styles[(k // 2) % len(styles)],
                    label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path
