"""Learning check of the offline baselines: each trains through ``coworld-bench run``
on a small real offline dataset and is compared with uniformly random actions on the
same evaluation seeds.

    python benchmarks/zoo_learning.py [--algos drq-bc d3rlpy-td3bc] [--target DC]
                                      [--updates 5000] [--episodes 5] [--out DIR]

The dataset is the quick preset's: Meta-World's scripted behaviour, medium-replay
(random actions giving way to the scripted policy's over the budget, until the return
is a third of the way from random actions' to the scripted policy's), 20 episodes at
most, fast rendering; the model sizes are the quick
preset's too. Prints, per algorithm, the wall time on this device and the final
return beside the random-action baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from coworld_bench.evaluation import random_action_returns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["drq-bc", "d3rlpy-td3bc"])
    parser.add_argument("--target", default="DC")
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="extra --set for every run")
    parser.add_argument("--out")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="zoo-learning-"))

    baseline = random_action_returns(args.target, args.episodes)
    rows = [("random actions", np.mean(baseline), np.std(baseline), 0.0, "-")]
    for algo in args.algos:
        command = [sys.executable, "-m", "coworld_bench.cli", "run", "--algo", algo,
                   "--target", args.target, "--preset", "quick", "--out", str(out), "--quiet",
                   "--set", f"train_steps={args.updates}", "--set", "eval_every=0",
                   "--set", f"eval_episodes={args.episodes}",
                   *sum((["--set", s] for s in args.set), [])]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        run = next(out.glob(f"*/{algo}/seed0"))
        final = json.loads((run / "result.json").read_text())["final"]
        dataset = json.loads((run / "config.json").read_text())["config"]
        rows.append((algo, final["mean"], final["std"], wall / 60,
                     f"{dataset['dataset_quality']} {dataset['dataset_behaviour']} "
                     f"{dataset['dataset_episodes']} episodes"))

    print(f"Offline learning check on {args.target}: {args.updates} updates (quick preset), "
          f"{args.episodes} evaluation episodes on the runner's evaluation seeds; runs in {out}")
    print(f"{'':<16} {'final return':>18} {'wall (min)':>11}  dataset")
    for name, mean, std, minutes, data in rows:
        print(f"{name:<16} {mean:>9.1f} ± {std:<6.1f} {minutes:>11.1f}  {data}")


if __name__ == "__main__":
    main()
