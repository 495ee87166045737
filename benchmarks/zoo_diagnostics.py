"""What the offline zoo's runs learned, from their run directories: the numbers behind a
"why" for a run that ends at or below uniformly random actions.

    python benchmarks/zoo_diagnostics.py RUNS [RUNS ...] --out DIR

RUNS are folders searched for finished run directories (``result.json`` beside
``config.json``). Writes ``DIR/diagnostics.csv``, one row per run:

- the final return and uniformly random actions' on the same evaluation seeds;
- reward per step: what the policy earned in the final evaluation, what random actions
  earn (their return / episode steps), and the dataset's (its episodes' mean return /
  steps, from the manifest);
- the value trace: the critic's value of the evaluation's states against the discounted
  return that followed them (``result.json``'s ``value_trace``), where the algorithm has
  a value;
- every training metric in ``metrics.jsonl``, averaged over the first and the last fifth
  of the records that hold it (``first/NAME``, ``last/NAME``), to show where each term
  went.

and ``DIR/diagnostics.md``: the mean over seeds of the main columns per algorithm and
target, and for each cell the last-fifth training metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

MAIN = ["final", "random", "earned_per_step", "random_per_step", "data_per_step",
        "value", "discounted_return"]


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _windows(records: list[dict]) -> dict[str, float]:
    """Each numeric metric averaged over the first and the last fifth of the records that
    hold it (a metric of a later phase, e.g. LOMPO's agent, over that phase's records)."""
    series: dict[str, list[float]] = defaultdict(list)
    for row in records:
        for key, value in row.items():
            if key not in ("step", "wall_time") and isinstance(value, (int, float)):
                series[key].append(float(value))
    out: dict[str, float] = {}
    for key, values in series.items():
        fifth = max(1, len(values) // 5)
        out[f"first/{key}"] = float(np.mean(values[:fifth]))
        out[f"last/{key}"] = float(np.mean(values[-fifth:]))
    return out


def summarise(run: Path) -> dict:
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    final, rand = result["final"], result.get("random_action") or {}
    steps = None
    data_per_step = math.nan
    manifest = Path(config.get("dataset") or "") / "manifest.json"
    if manifest.is_file():
        episodes = json.loads(manifest.read_text())["episodes"]
        steps = json.loads(manifest.read_text())["env"]["episode_steps"]
        data_per_step = float(np.mean([e["return"] / e["steps"] for e in episodes]))
    trace = result.get("value_trace") or {}
    row = {"run": str(run), "algo": result["algo"], "target": result["target"],
           "seed": result["seed"], "final": final["mean"],
           "random": rand.get("mean", math.nan),
           "earned_per_step": final.get("reward_per_step", math.nan),
           "random_per_step": rand["mean"] / steps if rand and steps else math.nan,
           "data_per_step": data_per_step,
           "value": trace.get("mean_value", math.nan),
           "discounted_return": trace.get("mean_discounted_return", math.nan)}
    row.update(_windows(_jsonl(run / "metrics.jsonl")))
    return row


def _mean(values: list) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return float(np.mean(numbers)) if numbers else math.nan


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = sorted({p.parent for root in args.runs for p in root.rglob("result.json")
                    if (p.parent / "config.json").exists()})
    if not found:
        parser.error(f"no finished run directory under {', '.join(map(str, args.runs))}")
    rows = [summarise(run) for run in found]
    args.out.mkdir(parents=True, exist_ok=True)
    columns = ["run", "algo", "target", "seed", *MAIN]
    columns += sorted({k for r in rows for k in r} - set(columns))
    with open(args.out / "diagnostics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        cells[(row["algo"], row["target"])].append(row)
    lines = ["| algorithm | target | seeds | " + " | ".join(MAIN) + " |",
             "|---|---|---|" + "---:|" * len(MAIN)]
    details = []
    for (algo, target), group in sorted(cells.items()):
        mean = {k: _mean([r.get(k) for r in group]) for k in columns[4:]}
        lines.append(f"| {algo} | {target} | {len(group)} | "
                     + " | ".join(_fmt(mean[k]) for k in MAIN) + " |")
        last = ", ".join(f"{k[5:]} {_fmt(mean[f'first/{k[5:]}'])} → {_fmt(v)}"
                         for k, v in mean.items()
                         if k.startswith("last/") and not math.isnan(v))
        details.append(f"- {algo} on {target} (first fifth → last fifth of training): {last}")
    text = "\n".join(["Means over seeds.", "", *lines, "", *details, ""])
    (args.out / "diagnostics.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
