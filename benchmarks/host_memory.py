"""CoWorld's target and source steps with glibc's default malloc and with
``coworld_bench.host.keep_freed_memory`` (what ``run`` applies on a CPU): seconds, kernel
(system) seconds and minor page faults per step, peak resident memory, and whether the
two give the same metrics. Each setting runs in its own process, alternating.

    python benchmarks/host_memory.py --config authors --repeats 2
    python benchmarks/host_memory.py --config quick --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def child(config: str, steps: int) -> dict:
    import torch

    from coworld_bench import bench, host

    with tempfile.TemporaryDirectory() as tmp:
        # bench.build builds as `run` does, which applies keep_freed_memory unless the
        # environment variable turns it off.
        algo, _, _ = bench.build("coworld", config, Path(tmp) / "data", Path(tmp) / "runs",
                                 "cpu", "off")
        steps = algo.timed_steps()  # CoWorld's target step and a source update
        torch.manual_seed(0)
        result = {"keep_freed_memory": os.environ.get(host.ENV, "1") != "0", "metrics": {}}
        for name, fn in (("target step", steps["coworld target step"]),
                         ("source step", steps["coworld source step"])):
            result["metrics"].update({f"{name}/{k}": float(v) for k, v in fn().items()})
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(steps):
                fn()
            after = resource.getrusage(resource.RUSAGE_SELF)
            result[name] = {"seconds": (time.perf_counter() - start) / steps,
                            "system_seconds": (after.ru_stime - before.ru_stime) / steps,
                            "minor_faults": (after.ru_minflt - before.ru_minflt) / steps}
        algo.close()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="authors", choices=["smoke", "quick", "authors"])
    parser.add_argument("--steps", type=int, default=3, help="timed calls of each step")
    parser.add_argument("--repeats", type=int, default=1, help="processes per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.config, args.steps)))
        return
    metrics = {}
    for _ in range(args.repeats):
        for keep in ("1", "0"):
            env = dict(os.environ, COWORLD_BENCH_KEEP_FREED_MEMORY=keep)
            out = subprocess.run([sys.executable, __file__, "--config", args.config, "--steps",
                                  str(args.steps), "--child"], env=env, check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            metrics.setdefault(keep, r["metrics"])
            label = "keep freed memory" if r["keep_freed_memory"] else "glibc default    "
            print(f"{args.config}, {label}: " + "; ".join(
                f"{n} {r[n]['seconds']:.3f} s (system {r[n]['system_seconds']:.3f} s, "
                f"{r[n]['minor_faults']:,.0f} minor faults)" for n in ("target step", "source step"))
                + f"; peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    print("same metrics under both settings:", metrics["1"] == metrics["0"])


if __name__ == "__main__":
    main()
