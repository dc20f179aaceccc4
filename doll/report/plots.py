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


STRUCTURE_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#0082c8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"]


def mask_panels(path: str | Path, rows: list[dict], *, title: str) -> Path:
    """A PNG grid, one row per image: each row's ``panels`` is a list of dicts with ``title``
    (a sentence), ``image`` (uint8 H x W), optional ``masks`` (name -> bool H x W, drawn as
    coloured contours with a legend) and optional ``heat`` (uint8 H x W saliency 0-255, drawn
    over the image with a colour bar). Written atomically to ``path``."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cols = max(len(r["panels"]) for r in rows)
    fig = Figure(figsize=(3.2 * cols + 0.6, 3.3 * len(rows) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row["panels"]):
                ax.axis("off")
                continue
            panel = row["panels"][c]
            ax.imshow(panel["image"], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if panel.get("heat") is not None:
                shown = ax.imshow(np.asarray(panel["heat"], float) / 255.0, cmap="jet", alpha=0.45, vmin=0, vmax=1,
                                  interpolation="bilinear")
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
                bar.set_label("saliency (0-1)", fontsize=7)
                bar.ax.tick_params(labelsize=6)
            handles = []
            for k, (name, mask) in enumerate((panel.get("masks") or {}).items()):
                colour = STRUCTURE_COLOURS[k % len(STRUCTURE_COLOURS)]
                if np.asarray(mask).any():
                    ax.contour(np.asarray(mask, float), levels=[0.5], colors=[colour], linewidths=1.2)
                handles.append(Line2D([0], [0], color=colour, lw=2, label=name))
            if handles:
                ax.legend(handles=handles, fontsize=6, loc="lower left", framealpha=0.7)
            ax.set_title(panel["title"], fontsize=8, wrap=True)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path
