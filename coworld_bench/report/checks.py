"""The report's own checks: every number of its result tables and value-estimation
files recomputed from the run directories they name, read afresh (``eval.jsonl``'s
final record, ``result.json``'s random-action returns, ``value_trace.npz``), with none
of the report's code. ``build_report`` runs them on what it has just written;
``coworld-bench report --check DIR`` runs them on a report made earlier (e.g. the one
committed under ``results/``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from coworld_bench.rundir import CONFIG_FILE, EVAL_FILE, RESULT_FILE, VALUE_TRACE_FILE

__all__ = ["check_report"]

RANDOM_ROW = "random"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _paths(text: str) -> list[str]:
    """The runs column: a JSON list of paths (whitespace-separated in reports made before
    2026-12-07, which could not hold a path with a space)."""
    return json.loads(text) if text.startswith("[") else text.split()


def _run_dir(text: str, report: Path) -> Path:
    """A run path as the report wrote it: relative to where it ran, or to the report's
    parent folder (a report moved with its runs)."""
    path = Path(text)
    if path.is_absolute() or path.exists():
        return path
    for base in (report, *report.parents):
        if (base / path).exists():
            return base / path
    return path


def _seed(run: Path) -> int:
    return int(json.loads((run / CONFIG_FILE).read_text())["seed"])


def _final_score(run: Path) -> float:
    lines = [line for line in (run / EVAL_FILE).read_text().splitlines() if line.strip()]
    final = json.loads(lines[-1])
    if not final.get("final"):
        raise ValueError(f"{run / EVAL_FILE} does not end in the final evaluation")
    return float(np.mean(final["returns"]))


def _random_score(run: Path) -> float:
    random = json.loads((run / RESULT_FILE).read_text())["random_action"]
    return float(np.mean(random["returns"]))


def _same(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=1e-12, atol=1e-9) or (np.isnan(a) and np.isnan(b)))


def _text(mean: float, std: float, n: int, expected: int, decimals: int) -> str:
    if n == 0:
        return f"– (0/{expected} seeds)"
    text = f"{mean:.{decimals}f}±{std:.{decimals}f}"
    return text + (f" ({n}/{expected} seeds)" if n < expected else "")


def _check_table(long_csv: Path, report: Path, problems: list[str]) -> int:
    checked = 0
    rows = _rows(long_csv)
    recomputed: dict[tuple[str, str], tuple[float, float, int, int]] = {}
    for row in rows:
        where = f"{long_csv.name}: {row['model']} / {row['column']}"
        runs = [_run_dir(p, report) for p in _paths(row["runs"])]
        try:
            by_seed: dict[int, list[Path]] = {}
            for run in runs:
                by_seed.setdefault(_seed(run), []).append(run)
            if row["algo"] == RANDOM_ROW:  # one score per seed: the mean over its runs
                seeds = sorted(by_seed)
                scores = [float(np.mean([_random_score(r) for r in by_seed[s]])) for s in seeds]
            else:
                pairs = sorted((_seed(r), str(r), _final_score(r)) for r in runs)
                seeds, scores = [p[0] for p in pairs], [p[2] for p in pairs]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            problems.append(f"{where}: a run cannot be read ({type(error).__name__}: {error})")
            continue
        written = [float(s) for s in row["scores"].split()]
        n, expected = int(row["n_seeds"]), int(row["expected_seeds"])
        mean = float(np.mean(scores)) if scores else float("nan")
        std = float(np.std(scores)) if scores else float("nan")
        if [int(s) for s in row["seeds"].split()] != seeds or n != len(scores):
            problems.append(f"{where}: seeds {row['seeds']!r} written, {seeds} in the runs")
        elif len(written) != len(scores) or not all(map(_same, written, scores)):
            problems.append(f"{where}: scores {written} written, {scores} recomputed")
        elif not (_same(float(row["mean"]), mean) and _same(float(row["std"]), std)):
            problems.append(f"{where}: {row['mean']} ± {row['std']} written, {mean!r} ± {std!r} "
                            "recomputed")
        checked += 1 + len(scores)
        recomputed[(row["model"], row["column"])] = (mean, std, len(scores), expected)
    # The paper layout (csv) is these cells rounded.
    layout = long_csv.with_name(long_csv.name.replace("_long.csv", ".csv"))
    if layout.exists() and recomputed:
        means = [abs(m) for (model, _), (m, _, k, _) in recomputed.items()
                 if k and model != "Random actions"]
        decimals = 0 if means and max(means) >= 100 else 1
        for row in _rows(layout):
            for column, text in row.items():
                key = (row["model"], column)
                if key not in recomputed:
                    continue
                mean, std, n, expected = recomputed[key]
                if text != _text(mean, std, n, expected, decimals):
                    problems.append(f"{layout.name}: {row['model']} / {column} reads {text!r}, "
                                    f"recomputed {_text(mean, std, n, expected, decimals)!r}")
                checked += 1
    return checked


def _check_values(path: Path, report: Path, problems: list[str]) -> int:
    checked = 0
    for row in _rows(path):
        run = _run_dir(row["run"], report)
        try:
            with np.load(run / VALUE_TRACE_FILE, allow_pickle=False) as trace:
                value, true = trace["value"], trace["discounted_return"]
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{path.name}: {run} has no readable value trace ({error})")
            continue
        expected = {"mean_value": float(value.mean()), "mean_true_return": float(true.mean()),
                    "mean_error": float((value - true).mean())}
        for key, number in expected.items():
            if not _same(float(row[key]), number):
                problems.append(f"{path.name}: {row['algo']} seed {row['seed']} {key} "
                                f"{row[key]} written, {number!r} recomputed from {run}")
            checked += 1
    return checked


def check_report(report: str | Path) -> tuple[int, list[str]]:
    """Recomputes the numbers of the report in ``report`` from the run directories its
    files name. Returns (numbers checked, what differs: empty when all are equal)."""
    report = Path(report)
    tables = sorted((report / "tables").glob("*_long.csv"))
    if not tables:
        return 0, [f"{report / 'tables'} holds no *_long.csv: not a report folder"]
    problems: list[str] = []
    checked = sum(_check_table(path, report, problems) for path in tables)
    for path in sorted((report / "figures").glob("value_estimation_*.csv")):
        checked += _check_values(path, report, problems)
    return checked, problems
