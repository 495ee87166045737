"""Smoke runs of every registered algorithm, made at one commit and compared with
another's: a restructure must change no number.

    python benchmarks/same_numbers.py make OUT            # every algorithm, smoke preset
    python benchmarks/same_numbers.py compare OUT_A OUT_B # metrics, evaluations, results

``make`` runs ``coworld-bench run --preset smoke`` for each algorithm (pairs on WC->DC,
offline algorithms and multi-source CoWorld on DC), one after another on one thread
(the same thread count on both sides: a CPU's reductions round by thread count).
``compare`` prints one line per algorithm: identical, or the first record that differs.
Times (``wall_time``, ``wall_time_s``, the estimate, an evaluation's
``seconds_per_episode``) and versions are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SKIP = {"wall_time", "wall_time_s", "estimated_wall_time_s", "seconds_per_episode",
        "versions", "git_commit", "created", "host"}


def make(out: Path) -> int:
    from coworld_bench import registry

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = 0
    for name in registry.names():
        cls = registry.get(name)
        where = ["--pair", "WC-DC"] if cls.needs_source else ["--target", "DC"]
        command = [sys.executable, "-m", "coworld_bench.cli", "run", "--algo", name, *where,
                   "--preset", "smoke", "--quiet", "--out", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        status = "ok" if result.returncode == 0 else f"FAILED ({result.stderr[-300:]})"
        failed += result.returncode != 0
        print(f"{name:<28} {status}", flush=True)
    return 1 if failed else 0


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if k not in SKIP}
            for line in path.read_text().splitlines() if line.strip()]


def _result(path: Path) -> dict:
    if not path.exists():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in SKIP}


def compare(a: Path, b: Path) -> int:
    runs = sorted({p.parent.relative_to(a) for p in a.rglob("config.json")} |
                  {p.parent.relative_to(b) for p in b.rglob("config.json")})
    differ = 0
    for run in runs:
        problems = []
        for name in ("metrics.jsonl", "eval.jsonl"):
            ra, rb = _records(a / run / name), _records(b / run / name)
            if ra != rb:
                i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y),
                         min(len(ra), len(rb)))
                problems.append(f"{name} record {i + 1} differs "
                                f"({len(ra)} vs {len(rb)} records)")
        fa, fb = _result(a / run / "result.json"), _result(b / run / "result.json")
        final = [{k: v for k, v in (f.get("final") or {}).items() if k not in SKIP}
                 for f in (fa, fb)]
        if final[0] != final[1] or not fa:
            problems.append("result.json final differs or is missing")
        differ += bool(problems)
        print(f"{str(run):<40} {'identical' if not problems else '; '.join(problems)}")
    print(f"{len(runs)} runs, {differ} differ.")
    return 1 if differ or not runs else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    return make(args.out) if args.command == "make" else compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
