"""Sweep the EWC strength lambda of dv2-finetune-ewc on a log grid.

    python benchmarks/ewc_sweep.py --pair BP-DC --preset quick --lambdas 1 10 100 1000 10000

Runs ``coworld-bench run --algo dv2-finetune-ewc --set ewc_lambda=L`` for every L
(same seeds, same data), prints the final return of each and the best, and writes the
table to ``--out/sweep.json``. The paper does not publish lambda; record the chosen
value as ``EWCConfig.ewc_lambda``'s default together with the sweep's command and
scale. The shipped default (100) has not yet been chosen by a sweep at a meaningful
scale (the quick preset needs about an hour per value on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="BP-DC")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1, 10, 100, 1000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/ewc-sweep")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    rows = []
    for lam in args.lambdas:
        finals = []
        for seed in args.seeds:
            out = Path(args.out) / f"lambda{lam:g}"
            subprocess.run([sys.executable, "-m", "coworld_bench.cli", "run", "--algo",
                            "dv2-finetune-ewc", "--pair", args.pair, "--preset", args.preset,
                            "--seed", str(seed), "--out", str(out), "--quiet",
                            "--set", f"ewc_lambda={lam}",
                            *sum((["--set", s] for s in args.set), [])], check=True)
            result = json.loads(next(out.glob(f"*/dv2-finetune-ewc/seed{seed}/result.json"))
                                .read_text())
            finals.append(result["final"]["mean"])
        rows.append({"lambda": lam, "mean": float(np.mean(finals)), "std": float(np.std(finals)),
                     "seeds": args.seeds})
        print(f"lambda {lam:>8g}: {np.mean(finals):8.1f} ± {np.std(finals):.1f}")
    best = max(rows, key=lambda r: r["mean"])
    print(f"best lambda: {best['lambda']:g} ({args.pair}, preset {args.preset})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sweep.json").write_text(json.dumps({"pair": args.pair, "preset": args.preset,
                                                           "rows": rows, "best": best}, indent=1))


if __name__ == "__main__":
    main()
