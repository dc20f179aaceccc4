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
               ylim: tuple[float, float] | None = (0.0, 1.0), integer_x: bool = False) -> Path:
    """A PNG line chart: ``series`` maps a legend entry to its (x, y) lists (None y values are
    skipped); ``integer_x``: whole-number x ticks only (optimiser steps). Written atomically to ``path``."""
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
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, xlabel, ylabel, title, ylim, legend=bool(series))
    fig.tight_layout()
    return _save(fig, path)


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
    return _save(fig, path)


def _wrapped(text: str, width: int) -> str:
    """A title or axis label broken into lines of at most ``width`` characters: a long one
    otherwise runs past the figure's edge (tight_layout does not shrink text)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _finish(ax, xlabel: str, ylabel: str, title: str, ylim, legend: bool) -> None:
    """Labels, title, limits, grid and legend, the same on every chart."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_wrapped(ylabel, 34))
    ax.set_title(_wrapped(title, 70))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="lower right")


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def interval_chart(path: str | Path, series: dict[str, tuple[list, list, list, list]], *, xlabel: str, ylabel: str,
                   title: str, logx: bool = False, ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """A PNG of lines with intervals: ``series`` maps a legend entry to (x, y, low, high)
    lists; a point whose low/high is None is drawn without a bar. The x ticks are the x
    values themselves (e.g. numbers of masks); ``logx`` spaces them logarithmically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    ticks = set()
    for k, (name, (xs, ys, lows, highs)) in enumerate(series.items()):
        pts = [(x, y, lo, hi) for x, y, lo, hi in zip(xs, ys, lows, highs) if x is not None and y is not None]
        if not pts:
            continue
        ticks.update(p[0] for p in pts)
        err = [[p[1] - (p[2] if p[2] is not None else p[1]) for p in pts],
               [(p[3] if p[3] is not None else p[1]) - p[1] for p in pts]]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, marker="o", markersize=4, capsize=3,
                    linestyle=styles[(k // 2) % len(styles)], label=name)
    if logx:
        ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([f"{t:g}" for t in sorted(ticks)])
        if logx:
            ax.minorticks_off()
    _finish(ax, xlabel, ylabel, title, ylim, legend=bool(series))
    fig.tight_layout()
    return _save(fig, path)


def bar_chart(path: str | Path, groups: list[str], series: dict[str, tuple[list, list]], *, ylabel: str, title: str,
              ylim: tuple[float, float] | None = (0.0, 1.0)) -> Path:
    """A PNG of grouped bars: one group per entry of ``groups`` (e.g. structures), one bar per
    ``series`` entry (legend) with its (values, errors) lists (an error None: no whisker)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, (name, (values, errors)) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        errs = [0.0 if e is None else e for e in errors] if errors else None
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(_wrapped(ylabel, 34))
    ax.set_title(_wrapped(title, 70))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3, axis="y")
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
