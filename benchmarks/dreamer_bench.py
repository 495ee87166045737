"""DreamerV2 benchmarks: update speed, and a learning check of the online agent.

    python benchmarks/dreamer_bench.py speed [--sizes paper quick] [--updates 3]
    python benchmarks/dreamer_bench.py learning [--task WW --updates 4000 --out DIR]

``speed``: seconds per training update (one world-model step on a batch of
``batch_size x seq_len`` real 64x64 frames, then one actor and one critic step in
imagination from every posterior state) at the paper's model size and at the quick
preset's, on this device.

``learning``: trains the online ``dreamerv2`` agent through ``coworld-bench run``
(the quick preset, overridable) and prints its evaluation curve beside the return of
uniformly random actions on the same task and episode seeds.
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


def speed(args):
    import torch

    from baselines.core.agent import DreamerAgent
    from baselines.core.config import QUICK_MODEL, DreamerConfig
    from coworld_bench.data import CollectConfig, Dataset, SequenceSampler, collect

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        collect(CollectConfig("DC", "random", episodes=1, env={"fast_render": True}),
                Path(tmp) / "d", progress=False)
        ds = Dataset(Path(tmp) / "d")
        print(f"speed: seconds per DreamerV2 update on {device} "
              f"({torch.get_num_threads()} threads)")
        for size in args.sizes:
            cfg = DreamerConfig(**({} if size == "paper" else QUICK_MODEL))
            agent = DreamerAgent(cfg, 4, device, seed=0)
            sampler = SequenceSampler(ds, cfg.batch_size, cfg.seq_len, seed=0)
            params = sum(p.numel() for p in agent.parameters())

            def update():
                post, _ = agent.train_model(agent.batch(sampler))
                agent.train_behaviour(post)

            update()  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.updates):
                update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            per = (time.perf_counter() - start) / args.updates
            latent = f"{cfg.stoch}x{cfg.classes}" if cfg.latent == "discrete" else str(cfg.stoch)
            print(f"  {size:<6} batch {cfg.batch_size}x{cfg.seq_len}, latents {latent}, deter "
                  f"{cfg.deter}, cnn {cfg.cnn_depth}, horizon {cfg.horizon}, "
                  f"{params / 1e6:.1f}M params: {per:.2f} s/update "
                  f"(mean of {args.updates})")


def learning(args):
    out = Path(args.out or tempfile.mkdtemp(prefix="dreamer-learning-"))
    command = [sys.executable, "-m", "coworld_bench.cli", "run", "--algo", "dreamerv2",
               "--target", args.task, "--preset", "quick", "--out", str(out), "--quiet",
               "--set", f"train_steps={args.updates}", "--set", f"eval_every={args.eval_every}",
               "--set", f"eval_episodes={args.episodes}", *sum((["--set", s] for s in args.set), [])]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    run = next(out.glob("*/dreamerv2/seed0"))
    config = json.loads((run / "config.json").read_text())["config"]
    curve = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    baseline = random_action_returns(args.task, args.episodes)
    print(f"learning: dreamerv2 (quick preset) on {args.task}, {wall / 60:.0f} min on this CPU, "
          f"train_every {config['train_every']} env steps per update, action repeat of the task")
    print(f"  random actions: {np.mean(baseline):.1f} ± {np.std(baseline):.1f}")
    for point in curve:
        env_steps = point["step"] * config["train_every"] + config["prefill"]
        print(f"  update {point['step']:>6}  (~{env_steps:>6} agent steps): "
              f"{point['mean']:.1f} ± {point['std']:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--sizes", nargs="+", default=["paper", "quick"], choices=["paper", "quick"])
    p.add_argument("--updates", type=int, default=3)
    p.set_defaults(func=speed)
    p = sub.add_parser("learning")
    p.add_argument("--task", default="WW")
    p.add_argument("--updates", type=int, default=4000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--set", action="append", default=[], help="extra --set for the run")
    p.add_argument("--out")
    p.set_defaults(func=learning)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
