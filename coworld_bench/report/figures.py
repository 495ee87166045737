"""The report's figures (matplotlib/seaborn), each saved as PNG and PDF.

Every figure reads in grayscale: heatmaps use a colour map whose lightness rises
monotonically (cividis) with the value printed in each cell; lines differ by style
and marker; bars by hatch. Titles and axes use the paper's terms.
"""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import numpy as np

from coworld_bench.data.format import atomic_write_bytes

__all__ = ["save", "with_ext", "LINESTYLES", "MARKERS", "HATCHES", "style"]

LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]
GRAYS = ["0.05", "0.35", "0.55", "0.7", "0.2", "0.45"]


def with_ext(stem: Path, ext: str) -> Path:
    """``stem`` + ``.ext`` (stems may hold dots, e.g. ``beta2=0.5``)."""
    return stem.parent / f"{stem.name}.{ext}"


def style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "pdf.fonttype": 42,
                         "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8})
    return plt


def save(fig, path_stem: Path) -> list[Path]:
    """Writes ``<stem>.png`` and ``<stem>.pdf`` atomically; closes the figure."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, bbox_inches="tight")
        data = buffer.getvalue()
        path = with_ext(path_stem, ext)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, lambda f, data=data: f.write(data))
        paths.append(path)
    plt.close(fig)
    return paths


def line_style(i: int) -> dict:
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
            "color": GRAYS[i % len(GRAYS)]}


def grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return int(math.ceil(n / cols)), cols


def text_color(value: float, vmin: float, vmax: float) -> str:
    """Black on light cells, white on dark ones (cividis is dark at the low end)."""
    if not np.isfinite(value) or vmax <= vmin:
        return "black"
    return "white" if (value - vmin) / (vmax - vmin) < 0.45 else "black"


def panel_grid(plt, n: int, max_cols: int, size=(3.6, 2.9), sharey=False):
    rows, cols = grid(n, max_cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows),
                             squeeze=False, sharey=sharey)
    flat = list(itertools.chain(*axes))
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]

