"""What a sweep costs: GPU-hours per run from the paper's training-time table, and the
dry run's table of cells (``coworld-bench sweep --dry-run``)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from coworld_bench.sweep.grids import (Job, SweepRequest, display_command, run_command,
                                       variant_folder)
from coworld_bench.textual import table

__all__ = ["training_minutes", "paper_name", "gpu_hours", "dry_run_text"]


# GPU-hours from the paper's training-time table -----------------------------------------

def training_minutes(paper_dir: Path | None = None) -> dict[str, tuple[float, int]]:
    """The paper's training-time table (one RTX 3090, Meta-World HP->BT): normalised
    model name -> (training minutes, iterations)."""
    if paper_dir is None:
        paper_dir = Path(__file__).resolve().parents[2] / "results" / "paper"
    path = Path(paper_dir) / "table_training_efficiency.csv"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {_norm(row["model"]): (float(row["training_min"]), int(row["iterations"]))
            for row in csv.DictReader(lines)}


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", name).lower()


def paper_name(algo: str) -> str | None:
    from coworld_bench import registry

    try:
        return registry.get(algo).display_name()
    except Exception:  # noqa: BLE001 - unknown cost, not an error, in a dry run
        return None


def gpu_hours(jobs: list[Job], table: dict[str, tuple[float, int]] | None = None
              ) -> dict[str, float | None]:
    """GPU-hours per run of each algorithm of ``jobs``: the paper's training minutes
    of the model of the same paper name / 60 (None: the table lacks it)."""
    table = training_minutes() if table is None else table
    out: dict[str, float | None] = {}
    for algo in dict.fromkeys(j.algo for j in jobs):
        name = paper_name(algo)
        minutes = table.get(_norm(name)) if name else None
        out[algo] = minutes[0] / 60.0 if minutes else None
    return out


def _hours(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.1f}"


def dry_run_text(request: SweepRequest, jobs: list[Job], root: Path) -> str:
    """The jobs by cell (algorithm x pair or target x grid point: seeds, runs, folder)
    and the estimated GPU-hours from the paper's training-time table."""
    per_run = gpu_hours(jobs)
    cells: dict[tuple, list[Job]] = {}
    for job in jobs:
        cells.setdefault((job.variant, job.algo, job.where), []).append(job)
    rows, known, unknown_runs = [], 0.0, 0
    for (variant, algo, where), group in cells.items():
        hours = per_run[algo]
        total = None if hours is None else hours * len(group)
        if total is None:
            unknown_runs += len(group)
        else:
            known += total
        rows.append([variant_folder(variant) if variant else "(default)", algo, where,
                     ",".join(str(j.seed) for j in group), len(group), _hours(hours),
                     _hours(total)])
    algos = list(dict.fromkeys(j.algo for j in jobs))
    lines = [f"Sweep of {len(jobs)} runs ({len(cells)} cells, {len(algos)} algorithms, preset "
             f"{request.preset}) into {root}:", ""]
    headers = ["grid point", "algorithm", "pair/target", "seeds", "runs", "GPU-h/run", "GPU-h"]
    if any(j.scale for j in jobs):  # a named grid's scale settings, per cell
        scales = [",".join(f"{k}={v}" for k, v in group[0].scale) or "-"
                  for group in cells.values()]
        rows = [[*row[:3], scale, *row[3:]] for row, scale in zip(rows, scales)]
        headers = [*headers[:3], "scale", *headers[3:]]
    lines.append(table(rows, headers))
    lines += ["", f"Estimated GPU-hours: {known:,.0f}"
              + (f" + {unknown_runs} runs of unknown cost ("
                 + ", ".join(a for a in algos if per_run[a] is None) + ")"
                 if unknown_runs else "") + "."]
    lines.append("  From the paper's training-time table (results/paper/"
                 "table_training_efficiency.csv: training minutes of one run on one RTX 3090, "
                 "Meta-World HP->BT, the paper's iterations), at the paper preset; evaluation "
                 "and dataset generation are not counted.")
    if request.preset != "paper":
        lines.append(f"  This sweep's preset is {request.preset}: its runs are far shorter "
                     "than these paper-scale estimates.")
    if request.gpus_per_job > 1:
        lines.append(f"  Each job holds {request.gpus_per_job} GPUs: the allocation is "
                     f"{request.gpus_per_job}x these GPU-hours.")
    first = jobs[0]
    example = [word.replace(str(root.resolve()), str(root)) for word in
               run_command(request, first, root)]
    lines += ["", "Each job is one run command, e.g.:", "  " + display_command(example)]
    return "\n".join(lines)
