"""How much of CoWorld's target step is its convolutions: seconds and FLOPs of the whole
step, and of the target world model's image encoder and decoder run forward and backward
alone on a batch of the same size (the encoder on the batch's images, the decoder on
random features of the posterior's width), on this machine's threads.

    python benchmarks/conv_share.py --config quick
    python benchmarks/conv_share.py --config authors --steps 2
    python benchmarks/conv_share.py --config quick --autocast bf16   # bfloat16 on the CPU

The algorithm is built as ``coworld-bench bench`` builds it (pair BP-DC on a small real
Drawer Close dataset), so the run's settings (deterministic mode, flushed denormals, the
kept heap) are in force. ``--autocast bf16`` runs both under CPU bfloat16 autocast (the
code path of ``precision: 16`` on CUDA; runs on a CPU train in float32), to show what
bfloat16 matrix units would give.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quick", choices=["smoke", "quick", "authors", "paper"])
    parser.add_argument("--steps", type=int, default=5, help="timed calls of each")
    parser.add_argument("--autocast", default="off", choices=["off", "bf16"])
    args = parser.parse_args()

    import contextlib

    import torch

    from coworld_bench import bench

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        algo, _, _ = bench.build("coworld", args.config, Path(tmp) / "data",
                                 Path(tmp) / "runs", "cpu", "off")
        target = algo.target
        wm = target.wm
        batch = target.batch(algo.sampler)
        feat = torch.randn(*batch["image"].shape[:2], wm.rssm.feat_dim)

        def convs():
            wm.zero_grad(set_to_none=True)
            out = wm.decoder(feat)
            (wm.encoder(batch["image"]).square().mean() + out.square().mean()).backward()

        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast == "bf16"
                    else contextlib.nullcontext())
        rows = []
        with autocast:
            algo.timed_steps()  # fills the source replay, as bench does
            for name, fn in (("target step", algo.target_step), ("encoder + decoder", convs)):
                torch.manual_seed(0)
                fn()  # warm-up
                seconds = bench.timed(fn, args.steps, cpu)
                rows.append((name, seconds, bench.count_ops(fn).flops / 1e9))
        algo.close()
    images = batch["image"].shape[0] * batch["image"].shape[1]
    print(f"CoWorld ({args.config} config), {images} images per batch, "
          f"{torch.get_num_threads()} threads, autocast {args.autocast}")
    print("| | s | GFLOP | GFLOP/s |\n|---|---:|---:|---:|")
    for name, seconds, gflop in rows:
        print(f"| {name} | {seconds:.3f} | {gflop:.1f} | {gflop / seconds:.1f} |")
    (_, step_s, step_f), (_, conv_s, conv_f) = rows
    print(f"encoder + decoder: {100 * conv_s / step_s:.0f}% of the step's time, "
          f"{100 * conv_f / step_f:.0f}% of its FLOPs")


if __name__ == "__main__":
    main()
