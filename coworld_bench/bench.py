"""``coworld-bench bench``: what training costs on this machine, measured.

For each algorithm family (CoWorld's target step and source step, Offline DV2's
behaviour step, DrQ+BC's step), built exactly as ``run`` builds it on a real dataset:

- seconds per update (mean of ``--updates`` after one warm-up; the source step without
  its simulator steps, which are timed under collection);
- FLOPs per update (``torch.utils.flop_counter``'s formulas, as FlopCounterMode counts:
  matrix products and convolutions, forward and backward) and the achieved GFLOP/s beside this machine's
  measured peak (a 2048 x 2048 float32 matrix product on the same threads/device);
- aten operator calls per update: every call that reaches the dispatcher below
  autograd, forward and backward (a ``TorchDispatchMode`` counts them; the same calls
  torch.profiler lists as ``aten::``), which is what bounds a GPU step at small batch;
  beside it, the calls actually dispatched from Python and autograd (torch.profiler's
  outermost ``aten::`` events), which is where ``--compile`` shows: a compiled loop's
  fused kernels are not aten calls, while the dispatch mode counts the eager calls;
- host synchronisations per update: the calls that make the host wait for the device
  (``.item()``/``float()``/``bool()`` on a tensor, ``nonzero``, ``masked_select``,
  ``unique``, ``equal``, copies from device to host); zero is the target;
- the sampler's sequences per second, collection frames per second with one process
  and with one per core, evaluation seconds per episode, peak resident memory, and the
  machine.

``--config``: ``quick`` (each algorithm's quick preset; the default, a few minutes on
a 2-core CPU), ``smoke`` (the tests' tiny models: seconds), ``authors`` (the authors' CoWorld model: continuous latents 50, GRU
200, hidden 200, 400-unit heads, CNN depth 32, horizon 15, batch 16 x 50; DrQ+BC at
its paper preset) or ``paper`` (the paper presets). Prints a table; ``--json FILE``
writes every figure.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# The authors' CoWorld model (their config, read for the figures of issue 15) on the
# batch the issue measured: what "authors" builds for the DreamerV2 family.
AUTHORS_MODEL = dict(latent="continuous", stoch=50, deter=200, hidden=200, mlp_units=400,
                     mlp_layers=4, cnn_depth=32, horizon=15, batch_size=16, seq_len=50)
FAMILIES = ("coworld", "offline-dv2", "drq-bc")
# Operators that make the host wait for the device (on a GPU; counted on any device).
SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "equal",
            "is_nonzero")


@dataclasses.dataclass
class OpCounts:
    calls: int = 0
    syncs: int = 0
    flops: int = 0
    sync_ops: dict[str, int] = dataclasses.field(default_factory=dict)


def count_ops(fn: Callable[[], Any]) -> OpCounts:
    """Runs ``fn`` once, counting aten operator calls, host synchronisations and FLOPs
    (torch's own FLOP formulas, ``torch.utils.flop_counter``, for the operators it
    knows: matrix products and convolutions, forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    from coworld_bench.algorithm import eagerly

    counts = OpCounts()

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            counts.calls += 1
            packet = func.overloadpacket
            name = packet.__name__
            if name in SYNC_OPS or (name in ("_to_copy", "copy_")
                                    and _device_to_host(args, kwargs)):
                counts.syncs += 1
                counts.sync_ops[name] = counts.sync_ops.get(name, 0) + 1
            if packet in flop_registry:
                counts.flops += int(flop_registry[packet](*args, **kwargs, out_val=out))
            return out

    with eagerly(), Counter():
        fn()
    return counts


def profiled_calls(fn: Callable[[], Any]) -> int:
    """Runs ``fn`` once under torch.profiler: the outermost ``aten::`` calls (those not
    made from inside another aten operator), i.e. the dispatcher entries from Python
    and autograd. Unlike ``count_ops`` (which runs compiled functions eagerly) this
    sees what a compiled update really dispatches: a compiled graph's fused kernels are
    not aten calls."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and (
        e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def _device_to_host(args, kwargs) -> bool:
    """A copy from an accelerator to the CPU (on a CPU-only machine, never)."""
    import torch

    tensors = [a for a in args if torch.is_tensor(a)]
    if not tensors:
        return False
    if len(tensors) >= 2:  # copy_(dst, src)
        return tensors[0].device.type == "cpu" and tensors[1].device.type != "cpu"
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == "cpu" \
        and tensors[0].device.type != "cpu"


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], n: int, device) -> float:
    """Mean seconds of ``fn`` over ``n`` calls (device work included)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / n


def matmul_peak(device, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a float32 ``size`` x ``size`` matrix product on ``device``."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    seconds = timed(lambda: a @ b, repeats, device)
    return 2 * size ** 3 / seconds / 1e9


def machine(device) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of its finished children (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return max(own, children) * scale / 2 ** 20


# Building the algorithms as `run` does -----------------------------------------------

def overrides_for(algo: str, config: str) -> tuple[str, dict[str, Any]]:
    """(preset, overrides) of ``algo`` under a bench config."""
    if config in ("smoke", "quick"):
        return config, {}
    if config == "authors" and algo != "drq-bc":
        return "paper", dict(AUTHORS_MODEL)
    return "paper", {}


def build(algo: str, config: str, data_root: Path, out: Path, device: str,
          compile: str = "auto", extra: dict[str, Any] | None = None):
    """The algorithm object of ``coworld-bench run`` (pair BP-DC or target DC) on the
    bench's small real Drawer Close dataset; CoWorld's source replay gets one random
    episode so that the source step has sequences to sample."""
    from coworld_bench.data import Dataset
    from coworld_bench.runner import RunRequest, prepare

    preset, overrides = overrides_for(algo, config)
    overrides.update(dataset_quality="random", dataset_behaviour="random", dataset_episodes=2,
                     fast_render=True, **(extra or {}))
    from coworld_bench import registry

    task = dict(pair="BP-DC") if registry.get(algo).needs_source else dict(target="DC")
    run = prepare(RunRequest(algo=algo, preset=preset, overrides=overrides, device=device,
                             out=str(out), progress=False, yes=True, compile=compile,
                             data_root=str(data_root), **task))
    if run.collect_config is not None:
        from coworld_bench.data import collect

        collect(run.collect_config, run.dataset_directory, progress=False)
    run.dir.mkdir(parents=True, exist_ok=True)
    algorithm, eval_env = run.build(Dataset(run.dataset_directory))
    return algorithm, eval_env, run


def measure_update(name: str, fn: Callable[[], Any], updates: int, device) -> dict[str, Any]:
    fn()  # warm-up: allocations, lazy initialisation
    seconds = timed(fn, updates, device)
    counts = count_ops(fn)
    flops = counts.flops
    return {"name": name, "seconds": seconds, "flops": flops,
            "gflops_per_s": flops / seconds / 1e9, "aten_calls": counts.calls,
            "dispatched_calls": profiled_calls(fn),
            "host_syncs": counts.syncs, "sync_ops": counts.sync_ops}


def source_step_with_collection(algo: str, algorithm, config: str, data_root: Path,
                                out: Path, device: str, updates: int, dev,
                                compile: str = "auto") -> dict[str, Any]:
    """Seconds of CoWorld's whole source step (update + ``train_every`` simulator steps)
    with the simulator in this process and in the collection worker (beside the
    update): ``algorithm`` as built, and a second build with the other setting."""
    def seconds(step) -> float:
        step()  # warm-up
        return timed(step, updates, dev)

    mode, step = algorithm.online_step()
    row = {"env_steps": algorithm.config.train_every, f"seconds_{mode}": seconds(step)}
    other, _, _ = build(algo, config, data_root, out / "collect", device, compile,
                        extra={"collect_worker": "off" if mode == "worker" else "on"})
    try:
        other_mode, other_step = other.online_step()
        row[f"seconds_{other_mode}"] = seconds(other_step)
    finally:
        other.close()
    return row


def collection_rate(data_root: Path, workers: int, episodes: int) -> float:
    """Frames per second of ``data collect`` (random Drawer Close, rendered as the quick
    preset renders: fast, not anti-aliased)."""
    from coworld_bench.data import CollectConfig, collect

    with tempfile.TemporaryDirectory(dir=data_root) as tmp:
        start = time.perf_counter()
        manifest = collect(CollectConfig("DC", "random", episodes=episodes, seed=1,
                                         env={"fast_render": True, "antialias": False}),
                           Path(tmp) / "d", workers=workers, progress=False)
        return manifest["step_count"] / (time.perf_counter() - start)


def sampler_rate(dataset, batch: int, length: int, seconds: float = 2.0) -> float:
    from coworld_bench.data import SequenceSampler

    sampler = SequenceSampler(dataset, batch, length, seed=0)
    sampler.sample()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.sample()
        n += 1
    return n * batch / (time.perf_counter() - start)


def run_bench(algos: list[str], config: str, updates: int | None = None,
              device: str = "auto", collect_workers: int | None = None,
              log: Callable[[str], None] = print, compile: str = "auto") -> dict[str, Any]:
    import torch

    from coworld_bench.data import Dataset
    from coworld_bench.evaluation import evaluate
    from coworld_bench.runner import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)
    updates = updates or (3 if config == "quick" else 2)
    collect_workers = collect_workers or os.cpu_count() or 1
    result: dict[str, Any] = {"config": config, "machine": machine(dev), "updates": []}
    log(f"bench: {config} config on {dev} ({result['machine']['cpu']}, "
        f"{result['machine']['torch_threads']} threads)")
    result["matmul_gflops_per_s"] = matmul_peak(dev)
    with tempfile.TemporaryDirectory(prefix="coworld-bench-") as tmp:
        tmp = Path(tmp)
        data_root, out = tmp / "data", tmp / "runs"
        for algo in algos:
            log(f"  building {algo} ...")
            algorithm, eval_env, run = build(algo, config, data_root, out, device, compile)
            for name, fn in algorithm.timed_steps().items():
                torch.manual_seed(0)
                row = measure_update(name, fn, updates, dev)
                row["peak_gflops_fraction"] = row["gflops_per_s"] / result["matmul_gflops_per_s"]
                row["compile"] = algorithm.ctx.compile_backend or "off"
                result["updates"].append(row)
                log(f"  {name}: {row['seconds']:.3f} s/update")
            if algo == algos[0]:
                dataset = Dataset(run.dataset_directory)
                batch, length = algorithm.sequence_shape() or (16, 50)
                result["sampler"] = {"batch": batch, "length": length,
                                     "sequences_per_s": sampler_rate(dataset, batch, length)}
                ev = evaluate(algorithm, eval_env, 1, seed=0, eval_index=1)
                result["evaluation"] = {"algo": algo, "task": "DC",
                                        "seconds_per_episode": ev["seconds_per_episode"]}
                log(f"  evaluation: {ev['seconds_per_episode']:.1f} s/episode")
            if algorithm.online_step() is not None:
                log(f"  {algo} source step with its simulator steps, in process and in a "
                    "worker ...")
                result["source_collection"] = source_step_with_collection(
                    algo, algorithm, config, data_root, out, device, updates, dev, compile)
            algorithm.close()
            del algorithm
        log("  collection ...")
        result["collection"] = {
            "frames_per_s_1_process": collection_rate(data_root, 1, 1),
            "processes": collect_workers,
            "frames_per_s_n_processes": collection_rate(data_root, collect_workers,
                                                        collect_workers)}
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def format_table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"coworld-bench bench ({result['config']} config) on {m['device']}: {m['cpu']}, "
             f"{m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"
             + (f", {m['gpu']}" if "gpu" in m else "")
             + (f"; torch.compile: {result['updates'][0]['compile']}" if result["updates"]
                else ""),
             f"matrix-product peak (float32 2048^2): {result['matmul_gflops_per_s']:.1f} GFLOP/s",
             "",
             "| update | s/update | GFLOP/update | GFLOP/s | of peak | aten calls | "
             "dispatched (profiler) | host syncs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["updates"]:
        syncs = str(row["host_syncs"])
        if row["sync_ops"]:
            syncs += " (" + ", ".join(f"{k} x{v}" for k, v in row["sync_ops"].items()) + ")"
        lines.append(f"| {row['name']} | {row['seconds']:.3f} | {row['flops'] / 1e9:.1f} | "
                     f"{row['gflops_per_s']:.1f} | {100 * row['peak_gflops_fraction']:.0f}% | "
                     f"{row['aten_calls']} | {row['dispatched_calls']} | {syncs} |")
    s, c, e = result["sampler"], result["collection"], result["evaluation"]
    lines += ["",
              f"sampler: {s['sequences_per_s']:.0f} sequences/s ({s['batch']} x {s['length']})",
              f"collection (DC, random, fast, no anti-aliasing): {c['frames_per_s_1_process']:.0f} "
              f"frames/s with 1 process, {c['frames_per_s_n_processes']:.0f} with "
              f"{c['processes']}",
              f"evaluation ({e['algo']} on {e['task']}): {e['seconds_per_episode']:.1f} s/episode",
              *([f"coworld source step with its {sc['env_steps']} env steps: "
                 f"{sc['seconds_in_process']:.3f} s with the simulator in process, "
                 f"{sc['seconds_worker']:.3f} s with it in the collection worker"]
                if (sc := result.get("source_collection")) else []),
              f"peak resident memory: {result['peak_rss_mib']:.0f} MiB"]
    return "\n".join(lines)


def main(args) -> int:
    algos = args.algos or list(FAMILIES)
    unknown = [a for a in algos if a not in FAMILIES]
    if unknown:
        from coworld_bench.errors import UserError

        raise UserError(f"bench measures {', '.join(FAMILIES)}; not {', '.join(unknown)}.")
    result = run_bench(algos, args.config, args.updates, args.device,
                       log=(lambda *_: None) if args.quiet else print,
                       compile=args.compile)
    print(format_table(result))
    if args.json:
        from coworld_bench.data.format import atomic_write_json

        atomic_write_json(Path(args.json), result)
        print(f"Wrote {args.json}.")
    return 0
