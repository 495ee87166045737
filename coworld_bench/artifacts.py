"""Files an algorithm leaves in its run directory, written through one API.

Algorithms never open files of the run themselves: the runner hands each one an
``Artifacts`` over ``<run>/work/`` (``RunContext.artifacts``). Writes are atomic
(temp file + rename) or appends of whole lines; a resumed run cuts row logs back to
the checkpoint with ``truncate_rows``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from coworld_bench.data.format import atomic_write_bytes

__all__ = ["Artifacts"]


class Artifacts:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def update_npz(self, name: str, **arrays: np.ndarray) -> Path:
        """Adds (or replaces) arrays in ``name``.npz, keeping the others; atomic."""
        path = self.path(name)
        merged = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as saved:
                merged = {k: saved[k] for k in saved.files}
        merged.update(arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, lambda f: np.savez(f, **merged))
        return path

    def append_row(self, name: str, header: list[str], row: list) -> Path:
        """Appends one CSV row, writing ``header`` first if the file is new."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if not path.exists():
            writer.writerow(header)
        writer.writerow(row)
        with open(path, "a") as f:
            f.write(text.getvalue())
        return path

    def truncate_rows(self, name: str, rows: int) -> None:
        """Keeps the header and the first ``rows`` rows of a CSV (a resumed run redoes
        the rest); atomic."""
        path = self.path(name)
        if not path.exists():
            return
        lines = path.read_text().splitlines()[: rows + 1]
        data = ("\n".join(lines) + "\n").encode()
        atomic_write_bytes(path, lambda f: f.write(data))
