"""CoWorld's target and source steps with and without ``torch.compile``: seconds per step
and the aten calls each step dispatches (torch.profiler's outermost ``aten::`` events,
``coworld_bench.bench.profiled_calls``), with Dynamo's recompilations logged.

    TORCH_LOGS=recompiles python benchmarks/compile_dispatch.py --config smoke --compile inductor
    python benchmarks/compile_dispatch.py --config smoke --compile off

The algorithm is built as ``coworld-bench bench`` builds it (pair BP-DC on a small real
Drawer Close dataset). The first call of each step compiles (minutes on a CPU, seconds
once inductor's cache holds the graphs) and is reported apart.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="smoke", choices=["smoke", "quick", "authors", "paper"])
    parser.add_argument("--compile", default="inductor", help="inductor, aot_eager or off")
    parser.add_argument("--steps", type=int, default=3, help="timed calls of each step")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from coworld_bench import bench

    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        algo, _, _ = bench.build("coworld", args.config, Path(tmp) / "data", Path(tmp) / "runs",
                                 "cpu", args.compile)
        torch.set_num_threads(args.threads)
        timed = algo.timed_steps()  # CoWorld's target step and a source update
        steps = {"target step": timed["coworld target step"],
                 "source step": timed["coworld source step"]}
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            first = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            seconds = (time.perf_counter() - start) / args.steps
            print(f"coworld {name} ({args.config}, compile {args.compile}, {args.threads} "
                  f"thread(s)): first call {first:.2f} s, then {seconds:.3f} s/step, "
                  f"{bench.profiled_calls(fn)} dispatched aten calls", flush=True)
        algo.close()


if __name__ == "__main__":
    main()
