"""Dataset benchmarks: sampling speed, memory against dataset size, collection rate.

    python benchmarks/data_bench.py sampling  [--dir DATASET]
    python benchmarks/data_bench.py memory    [--budget-gib 1 --sizes-gib 0.5 4]
    python benchmarks/data_bench.py collect   [--tasks DC PG WD --steps 200]

``sampling``: (50, 50) sequences of 64x64 frames per second from a dataset on disk.
``memory``: builds datasets of real collected episodes copied to the requested sizes
(distinct files, so nothing is shared) and samples from each in a fresh process,
printing its peak RSS against the stated budget. Sampling reads only the requested
rows, so peak RSS stays flat while the dataset grows past the budget.
``collect``: frames per second of the collector (one process, and N processes
together) beside the raw simulator rate on the same machine: the simulator's own
step plus one 64x64 render, with no dataset code around it; for each rendering
setting (the default, ``fast_render``, ``fast_render`` without anti-aliasing).
RoboDesk's raw rate is RoboDesk's own step, which renders with its own camera code
(shadows on) whatever the settings say.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _tiny_dataset(root: Path, episodes: int = 2) -> Path:
    from coworld_bench.data import CollectConfig, collect

    out = root / "seed-data"
    if not (out / "manifest.json").exists():
        collect(CollectConfig("DC", "random", episodes=episodes, env={"fast_render": True}), out,
                progress=False)
    return out


def sampling(args):
    from coworld_bench.data import Dataset, SequenceSampler

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir) if args.dir else _tiny_dataset(Path(tmp))
        ds = Dataset(directory)
        sampler = SequenceSampler(ds, batch_size=50, length=50, seed=0)
        sampler.sample()  # warm the page cache
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            sampler.sample()
            n += 1
        elapsed = time.perf_counter() - start
        mb = 50 * 50 * 64 * 64 * 3 / 1e6
        print(f"sampling: {n / elapsed:.1f} batches/s of 50x50 = {50 * n / elapsed:.0f} "
              f"sequences/s ({mb * n / elapsed:.0f} MB/s of frames) from {directory} "
              f"({ds.num_steps} steps, {len(ds)} episodes)")


def _build(seed_dir: Path, out: Path, gib: float) -> int:
    """A dataset of about ``gib`` GiB: copies of real episode files."""
    from coworld_bench.data.format import atomic_write_json

    manifest = json.loads((seed_dir / "manifest.json").read_text())
    src = manifest["episodes"]
    size = (seed_dir / src[0]["file"]).stat().st_size
    count = max(1, int(gib * 2**30 / size))
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        e = src[i % len(src)]
        name = f"ep{i:06d}-{e['steps']}.npz"
        shutil.copyfile(seed_dir / e["file"], out / name)
        entries.append({**e, "index": i, "file": name})
    manifest.update(episodes=entries, episode_count=count,
                    step_count=sum(e["steps"] for e in entries))
    atomic_write_json(out / "manifest.json", manifest)
    return count


def _sample_child(directory: str, batches: int):
    """Runs in a fresh process: open, sample, report peak RSS."""
    from coworld_bench.data import Dataset, SequenceSampler

    ds = Dataset(directory, checksum=False)
    sampler = SequenceSampler(ds, batch_size=50, length=50, seed=0)
    start = time.perf_counter()
    for _ in range(batches):
        sampler.sample()
    rate = batches / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"peak_rss_gib": peak, "batches_per_s": rate, "steps": ds.num_steps}))


def memory(args):
    base = Path(args.workdir or tempfile.mkdtemp(prefix="coworld-bench-mem-"))
    try:
        seed_dir = _tiny_dataset(base)
        print(f"memory: budget {args.budget_gib} GiB peak RSS; sampling {args.batches} batches "
              f"of 50x50 sequences in a fresh process per size")
        for gib in args.sizes_gib:
            out = base / f"ds-{gib}"
            count = _build(seed_dir, out, gib)
            disk = sum(p.stat().st_size for p in out.glob("*.npz")) / 2**30
            result = subprocess.run(
                [sys.executable, __file__, "_child", str(out), str(args.batches)],
                capture_output=True, text=True, check=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            verdict = "within" if r["peak_rss_gib"] <= args.budget_gib else "OVER"
            print(f"  dataset {disk:5.2f} GiB ({count} episodes, {r['steps']} steps, "
                  f"{disk / args.budget_gib:.1f}x budget): peak RSS {r['peak_rss_gib']:.3f} GiB "
                  f"({verdict} budget), {r['batches_per_s']:.1f} batches/s")
            shutil.rmtree(out)
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)


def _raw_rate(task_id: str, steps: int, render: dict) -> float:
    """The simulator alone: its own step function and one 64x64 render per step, with
    the rendering settings ``render`` (fast_render, antialias; the env's camera has
    already set the model's multisampling, which the renderer below reads)."""
    import mujoco

    from coworld_bench import envs

    fast = render.get("fast_render", False)
    env = envs.make(task_id, seed=0, **render).unwrapped
    suite = env.task.suite
    rng = np.random.default_rng(0)
    if suite == "metaworld":
        sim = env._env
        sim.reset()
        renderer = mujoco.Renderer(sim.model, 64, 64)
        step = lambda a: sim.step(a)  # noqa: E731
        scene_data = lambda: sim.data  # noqa: E731
        camera = "corner"
    elif suite == "dmc":
        sim = env._env
        sim.reset()
        renderer = mujoco.Renderer(sim.physics.model.ptr, 64, 64)

        def step(a):
            for _ in range(env.task.action_repeat):
                sim.step(a)
        scene_data = lambda: sim.physics.data.ptr  # noqa: E731
        camera = 0
    else:  # RoboDesk renders inside its own step, with its own camera code
        from coworld_bench.envs.robodesk import import_robodesk

        rd = import_robodesk().RoboDesk(task=env.task.sim_task, reward="dense")
        rd.reset()
        start = time.perf_counter()
        for _ in range(steps):
            rd.step(rng.uniform(-1, 1, 5))
        return steps / (time.perf_counter() - start)
    flags = renderer.scene.flags
    flags[mujoco.mjtRndFlag.mjRND_SHADOW] = not fast
    flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = not fast
    dim = env.task.action_dim
    start = time.perf_counter()
    for _ in range(steps):
        step(rng.uniform(-1, 1, dim))
        renderer.update_scene(scene_data(), camera=camera)
        renderer.render()
    return steps / (time.perf_counter() - start)


def collect_rate(args):
    from coworld_bench.data import CollectConfig, collect

    print(f"collect: frames/s, {os.cpu_count()} cores; one episode = 501 frames")
    for task_id in args.tasks:
        for render in ({}, {"fast_render": True}, {"fast_render": True, "antialias": False}):
            raw = _raw_rate(task_id, args.steps, render)
            rates = []
            for workers in (1, args.workers):
                with tempfile.TemporaryDirectory() as tmp:
                    config = CollectConfig(task_id, "random", episodes=workers, env=render)
                    start = time.perf_counter()
                    m = collect(config, tmp, workers=workers, progress=False)
                    rates.append((m["step_count"] + m["episode_count"]) / (time.perf_counter() - start))
            label = "raw (own render)" if task_id in ("PG", "OS", "OD", "UB") else "raw simulator"
            setting = ", ".join(f"{k}={v}" for k, v in render.items()) or "default rendering"
            print(f"  {task_id:<6} {setting:<35} {label} {raw:6.1f}/s   "
                  f"collector 1 process {rates[0]:6.1f}/s ({rates[0] / raw:.0%} of raw)   "
                  f"{args.workers} processes {rates[1]:6.1f}/s total "
                  f"({rates[1] / args.workers:.1f}/s per process)")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return _sample_child(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("sampling")
    p.add_argument("--dir")
    p.add_argument("--seconds", type=float, default=10)
    p.set_defaults(func=sampling)
    p = sub.add_parser("memory")
    p.add_argument("--budget-gib", type=float, default=1.0)
    p.add_argument("--sizes-gib", type=float, nargs="+", default=[0.5, 4.0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--workdir")
    p.set_defaults(func=memory)
    p = sub.add_parser("collect")
    p.add_argument("--tasks", nargs="+", default=["DC", "PG", "WD"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=collect_rate)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
