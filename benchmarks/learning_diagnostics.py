"""Learning curves and the diagnostics of model-based runs, from their run directories.

    python benchmarks/learning_diagnostics.py RUNS [RUNS ...] --out DIR [--title TEXT]

RUNS are folders searched for run directories (those holding ``eval.jsonl`` and
``config.json``). Writes ``DIR/curves.csv`` (one row per run and evaluation point) and
``DIR/curves.png`` / ``.pdf``, one line per algorithm and observation kind (mean over
seeds, the band one standard error):

- the evaluation return, beside uniformly random actions on the final evaluation's
  seeds (``result.json``'s ``random_action``, averaged over the runs);
- reward per step: what the policy earned in the evaluation episodes against what the
  agent's reward model predicts on those same real steps and what it imagines in
  training (``imagined/reward_mean``, the reward its actor maximises);
- the reward model's mean absolute error on the evaluation's real steps (held out:
  no offline learner trains on them);
- the actor's entropy and action std; the critic's value against its lambda-return
  target (training metrics: in the CSV averaged over the ``log_every`` windows since the
  previous evaluation, in the figure at every logged window).

Training metrics of CoWorld's target agent are read without their ``target/`` prefix;
source and warm-up metrics are left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

TRAINING = {"imagined_reward": "imagined/reward_mean", "entropy": "actor/entropy_mean",
            "action_std": "actor/std_mean", "value": "critic/value_mean",
            "value_target": "critic/target_mean"}
EVALUATION = {"return": "mean", "earned_reward": "reward_per_step",
              "predicted_reward": "predicted_reward_per_step", "reward_error": "reward_error"}
COLUMNS = ["run", "algo", "obs", "seed", "step", *EVALUATION, *TRAINING, "random_return"]


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_dirs(roots: list[Path]) -> list[Path]:
    found = set()
    for root in roots:
        for eval_file in root.rglob("eval.jsonl"):
            if (eval_file.parent / "config.json").exists():
                found.add(eval_file.parent)
    return sorted(found)


def _training_metric(row: dict, key: str) -> float | None:
    for name in (key, f"target/{key}"):
        if name in row:
            return float(row[name])
    return None


def training_rows(run: Path) -> list[dict]:
    """The training diagnostics at every logged window of a run."""
    config = json.loads((run / "config.json").read_text())
    rows = []
    for m in _jsonl(run / "metrics.jsonl"):
        row = {"run": str(run), "algo": config["algo"], "obs": _obs(config["config"]),
               "step": int(m["step"])}
        for column, key in TRAINING.items():
            value = _training_metric(m, key)
            row[column] = math.nan if value is None else value
        if any(np.isfinite(row[c]) for c in TRAINING):
            rows.append(row)
    return rows


def _obs(settings: dict) -> str:
    obs = settings.get("obs", "image")
    if settings.get("source_obs") not in (None, obs):
        obs = f"{obs}/source {settings['source_obs']}"
    return obs


def rows_of(run: Path) -> list[dict]:
    config = json.loads((run / "config.json").read_text())
    obs = _obs(config["config"])
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").exists() else {}
    random_return = (result.get("random_action") or {}).get("mean", math.nan)
    metrics = _jsonl(run / "metrics.jsonl")
    rows, previous = [], -1
    for point in _jsonl(run / "eval.jsonl"):
        step = int(point["step"])
        window = [m for m in metrics if previous < m["step"] <= step]
        previous = step
        row = {"run": str(run), "algo": config["algo"], "obs": obs, "seed": config["seed"],
               "step": step, "random_return": random_return}
        for column, key in EVALUATION.items():
            row[column] = float(point.get(key, math.nan))
        for column, key in TRAINING.items():
            values = [v for v in (_training_metric(m, key) for m in window) if v is not None]
            row[column] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return rows


def _mean_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if not values.size:
        return math.nan, math.nan
    se = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
    return float(values.mean()), float(se)


def plot(rows: list[dict], training: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = sorted({(r["algo"], r["obs"]) for r in rows})
    panels = [("Evaluation return", ["return"]),
              ("Reward per step: earned (solid), model on the real steps (dashed), "
               "imagined (dotted)", ["earned_reward", "predicted_reward", "imagined_reward"]),
              ("Reward model |error| on the evaluation's real steps", ["reward_error"]),
              ("Actor entropy", ["entropy"]), ("Action std (floor 0.1)", ["action_std"]),
              ("Critic value (solid) and lambda-return target (dashed)", ["value", "value_target"])]
    styles = ["-", "--", ":"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, columns) in zip(axes.flat, panels):
        source = training if columns[0] in TRAINING else rows
        for g, (algo, obs) in enumerate(groups):
            mine = [r for r in source if (r["algo"], r["obs"]) == (algo, obs)]
            for c, column in enumerate(columns):
                if column in TRAINING and source is rows:  # imagined reward: per log
                    mine_c = [r for r in training if (r["algo"], r["obs"]) == (algo, obs)]
                else:
                    mine_c = mine
                steps_c = sorted({r["step"] for r in mine_c})
                stats = [_mean_se([r[column] for r in mine_c if r["step"] == s]) for s in steps_c]
                mean = np.array([m for m, _ in stats])
                se = np.array([e for _, e in stats])
                if not np.isfinite(mean).any():
                    continue
                marker = "o" if column not in TRAINING else None
                ax.plot(steps_c, mean, styles[c], color=colors[g % len(colors)], marker=marker,
                        markersize=3, label=f"{algo} ({obs})" if c == 0 else None)
                ax.fill_between(steps_c, mean - se, mean + se, color=colors[g % len(colors)],
                                alpha=0.15)
        if columns == ["return"]:
            random = _mean_se([r["random_return"] for r in rows if r["step"] == max(
                x["step"] for x in rows if x["run"] == r["run"])])[0]
            if np.isfinite(random):
                ax.axhline(random, color="k", ls="--", lw=1, label="uniform random")
            ax.legend(fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update")
    fig.suptitle(title)
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(out.with_suffix(suffix), dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="Learning and its diagnostics")
    args = parser.parse_args(argv)
    runs = run_dirs(args.roots)
    rows = [row for run in runs for row in rows_of(run)]
    training = [row for run in runs for row in training_rows(run)]
    if not rows:
        raise SystemExit(f"No run directories with evaluations under {args.roots}.")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, training, args.out / "curves", args.title)
    final = {}
    for r in rows:
        key = (r["algo"], r["obs"], r["run"])
        if key not in final or r["step"] > final[key]["step"]:
            final[key] = r
    print(f"{len(final)} runs, {len(rows)} evaluation points -> {args.out}")
    for (algo, obs) in sorted({k[:2] for k in final}):
        last = [r for k, r in final.items() if k[:2] == (algo, obs)]
        m, se = _mean_se([r["return"] for r in last])
        rnd, rse = _mean_se([r["random_return"] for r in last])
        print(f"  {algo} ({obs}): final return {m:.1f} ± {se:.1f} (se, n={len(last)}); "
              f"random {rnd:.1f} ± {rse:.1f}")


if __name__ == "__main__":
    main()
