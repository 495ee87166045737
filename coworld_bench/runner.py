"""The run lifecycle: resolve, prepare data, train, evaluate, checkpoint, resume.

A run lives in ``<out>/<pair or target>/<algo>/seed<N>/``:

    config.json      resolved config, versions, git commit (identity of the run)
    metrics.jsonl    training scalars, one JSON object per logging point
    eval.jsonl       one object per evaluation point: step, returns, success, mean, std
    checkpoint/      latest.pt: algorithm + optimiser + RNG states (weights_only loadable)
    value_trace.npz  final evaluation: value, reward, discounted_return per step
    result.json      final summary; its presence means the run is finished
    tb/              TensorBoard events
    wandb/           with --logger wandb: wandb's files (offline runs, logs)
    wandb_run_id     with --logger wandb: the wandb run's id, which a resumed run continues

Re-running the same command resumes from the checkpoint (logs after it are cut and
redone, so the files equal those of an uninterrupted run); a finished run is not
retrained unless ``force``; a different config in the same directory is refused.
Every check that can fail runs before the run directory is created.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench import logging_backends
from coworld_bench import tasks as tasks_lib
from coworld_bench.algorithm import PRESETS, RunContext, TrainConfig
from coworld_bench.artifacts import Artifacts
from coworld_bench.envs.base import EnvOptions
from coworld_bench.errors import UserError
from coworld_bench.evaluation import evaluate
from coworld_bench.protocol import protocol_record
from coworld_bench.rundir import (  # noqa: F401 - re-exported: the run directory's format
    CHECKPOINT_DIR, CHECKPOINTS, CONFIG_FILE, EVAL_FILE, LOCK_FILE, METRICS_FILE, RESULT_FILE,
    TB_DIR, VALUE_TRACE_FILE, WORK_DIR, RunError, atomic_write_bytes, atomic_write_json,
    parse_overrides, read_run_config,
)

__all__ = ["RunRequest", "Run", "prepare", "parse_overrides", "RunError", "read_run_config"]

VERSIONED = ("coworld-bench", "torch", "numpy", "gymnasium", "mujoco", "metaworld", "dm_control",
             "robodesk")



def make_env(task: str, *, seed: int, defaults: dict, **options):
    """``envs.make`` with the run's online settings (``defaults``) under ``options``;
    partially applied, it is the picklable ``RunContext.make_env``."""
    from coworld_bench import envs

    return envs.make(task, seed=seed, **{**defaults, **options})

def window_means(window: dict[str, list]) -> dict[str, float]:
    """Means of the scalars logged since the last record: tensors (left on their device
    by the updates) and numbers alike, brought to the host in one transfer per device,
    the only host synchronisation of the training loop."""
    import torch

    means, devices = {}, {}
    for key, values in window.items():
        tensors = [v for v in values if torch.is_tensor(v)]
        if not tensors:
            means[key] = float(np.mean(values))
            continue
        device = tensors[0].device
        stacked = torch.stack([v.to(device, torch.float32) if torch.is_tensor(v)
                               else torch.tensor(float(v), device=device) for v in values])
        devices.setdefault(device, []).append((key, stacked.mean()))
    for pairs in devices.values():
        for (key, _), value in zip(pairs, torch.stack([m for _, m in pairs]).tolist()):
            means[key] = value
    return {key: means[key] for key in window}


def first_non_finite(window: dict[str, list], steps: dict[str, list[int]]
                     ) -> tuple[int, str, float] | None:
    """The first (update, scalar, value) of the window that is NaN or infinite, or None:
    one host transfer per device (each scalar's values reduced to "all finite" there)."""
    import torch

    flags, bad = [], []
    for key, values in window.items():
        if any(torch.is_tensor(v) for v in values):
            device = next(v for v in values if torch.is_tensor(v)).device
            stacked = torch.stack([v.to(device, torch.float32) if torch.is_tensor(v)
                                   else torch.tensor(float(v), device=device) for v in values])
            flags.append((key, stacked))
        elif not np.isfinite(np.asarray(values, dtype=np.float64)).all():
            bad.append(key)
    if flags:
        finite = torch.stack([torch.isfinite(t).all() for _, t in flags]).tolist()
        bad += [key for (key, _), ok in zip(flags, finite) if not ok]
    if not bad:
        return None
    found = []
    for key in bad:
        values = [float(v) for v in window[key]]
        i = next(i for i, v in enumerate(values) if not math.isfinite(v))
        found.append((steps[key][i], key, values[i]))
    return min(found, key=lambda f: (f[0], "loss" not in f[1]))


@dataclasses.dataclass
class RunRequest:
    algo: str
    pair: str | None = None
    source: str | None = None
    target: str | None = None
    seed: int = 0
    preset: str = "paper"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "auto"
    out: str = "runs"
    force: bool = False
    progress: bool = True
    yes: bool = False  # start the paper preset on a CPU anyway
    # Simulators of evaluation episodes run side by side in this many processes (None:
    # one per episode up to twice the cores; 1: one after another in this process). The
    # results are the same either way.
    eval_workers: int | None = None
    # torch.compile backend for the algorithms' hot loops: "auto" (inductor on CUDA, none
    # on a CPU), "off", or a backend name (inductor, aot_eager, ...).
    compile: str = "auto"
    # Where datasets and the random-action cache live (None: $COWORLD_BENCH_DATA, else
    # the user's cache folder).
    data_root: str | None = None
    # Where scalars go besides TensorBoard (always written): "tensorboard" (nowhere
    # else) or "wandb" (a wandb run mirrors them; see coworld_bench.logging_backends).
    logger: str = "tensorboard"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise RunError(f"Unknown device {name!r}; valid devices: auto, cpu, cuda.")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device.")
    return torch.device(name)


def _eval_scalars(logger, result: dict, step: int) -> None:
    """An evaluation's return and reward-model check in TensorBoard (and wandb)."""
    logger.scalar("eval/return", result["mean"], step)
    for key in ("reward_per_step", "predicted_reward_per_step", "reward_error"):
        if key in result:
            logger.scalar(f"eval/{key}", result[key], step)


def _format_hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def dataset_dir(config: TrainConfig, target: tasks_lib.TaskSpec, root: str | Path | None = None
                ) -> Path:
    """The target dataset's folder: ``dataset_dir`` if set, else a folder named by its
    settings under ``root`` (default: the data root, ``$COWORLD_BENCH_DATA``)."""
    from coworld_bench.data import default_root

    if config.dataset_dir:
        return Path(config.dataset_dir).expanduser()
    render = ("-fast" if config.fast_render else "") + ("" if config.antialias else "-noaa")
    # The scripted behaviour's second form (annealed uniform random actions, normalised
    # thresholds): a new folder, so that data of the first (Gaussian noise) is not met.
    behaviour = config.dataset_behaviour + ("-r2" if config.dataset_behaviour == "scripted" else "")
    name = (f"{config.dataset_quality}-{behaviour}-{config.dataset_episodes}ep-"
            f"seed{config.dataset_seed}{render}")
    return (Path(root) if root else default_root()) / target.id / name


def _collect_config(config: TrainConfig, target: tasks_lib.TaskSpec):
    from coworld_bench.data import CollectConfig
    from coworld_bench.data.recipes import CARD_DIR, read_card

    params = {}
    card = CARD_DIR / f"{target.id}-{config.dataset_quality}.yaml"
    if card.exists():  # the card's settings of this behaviour (e.g. scripted reference return)
        params = dict((read_card(card).get("alternatives") or {}).get(config.dataset_behaviour)
                      or {})
        params.pop("episodes", None)
    return CollectConfig(task_id=target.id, quality=config.dataset_quality,
                         behaviour=config.dataset_behaviour, episodes=config.dataset_episodes,
                         seed=config.dataset_seed, env=render_options(config, defaults=False),
                         **params)


def render_options(config: TrainConfig, defaults: bool = True) -> dict[str, bool]:
    """The run's rendering settings as env options; ``defaults=False``: only those that
    differ from the default (what a dataset made for the run records)."""
    options = {"fast_render": config.fast_render, "antialias": config.antialias}
    if defaults:
        return options
    return {k: v for k, v in options.items() if v != getattr(EnvOptions, k)}


def max_eval_workers() -> int:
    """More simulator processes than four per core only queue for the same cores."""
    return 4 * (os.cpu_count() or 1)


def check_eval_workers(workers: int | None) -> None:
    if workers is not None and not 1 <= workers <= max_eval_workers():
        raise RunError(f"--eval-workers {workers} is out of range; valid: 1 (episodes one "
                       f"after another) to {max_eval_workers()} (four per core here), or "
                       "leave it out for one per episode up to twice the cores.")


def compile_backends() -> list[str]:
    """The values ``--compile`` takes: auto, off and torch.compile's backends."""
    import torch._dynamo

    return ["auto", "off", *torch._dynamo.list_backends(exclude_tags=())]


def check_request(request: RunRequest) -> None:
    """Range checks of the request's own fields (the settings check themselves)."""
    from coworld_bench.seeding import check_seed

    check_seed(request.seed, "--seed")
    check_eval_workers(request.eval_workers)
    logging_backends.check_logger(request.logger)
    if request.compile not in ("auto", "off") and request.compile not in compile_backends():
        raise RunError(f"--compile {request.compile!r} is not a torch.compile backend; valid: "
                       f"{', '.join(compile_backends())}.")


def prepare(request: RunRequest) -> "Run":
    """Resolves and checks everything; creates nothing on disk."""
    from coworld_bench import registry

    algo_cls = registry.get(request.algo)
    check_request(request)
    if request.preset not in PRESETS:
        raise RunError(f"Unknown preset {request.preset!r}; valid presets: {', '.join(PRESETS)}.")
    config = algo_cls.make_config(request.preset, request.overrides)
    if request.pair is not None:
        tasks_lib.resolve_pair(request.pair)  # unknown codes are reported first
    if algo_cls.needs_source:
        if request.pair is None and (request.source is None or request.target is None):
            raise RunError(f"{algo_cls.name} trains with an online source: give --pair SOURCE-TARGET "
                           "(e.g. BP-DC) or --source ID --target ID.")
        pair = tasks_lib.resolve_pair(request.pair, source=request.source,
                                      target=request.target) if request.pair else \
            tasks_lib.resolve_pair(source=request.source, target=request.target)
        source, target, run_name = pair.source, pair.target, pair.name
        action_dim = pair.action_dim
        if (warning := tasks_lib.pair_warning(pair)) is not None:
            print(f"coworld-bench: warning: {warning}", file=sys.stderr)
    else:
        if request.pair is not None or request.source is not None:
            target_hint = ""
            if request.pair:
                target_hint = f" {tasks_lib.resolve_pair(request.pair).target.codes[-1]}"
            learns = algo_cls.learns_from_text()
            serves = ("; its result serves every pair with that target"
                      if learns == "offline target" else "")
            raise RunError(f"{algo_cls.name} learns from: {learns}; it takes no --pair or "
                           f"--source: run it with --target{target_hint or ' T'}{serves}.")
        if request.target is None:
            raise RunError(f"{algo_cls.name} needs --target T (a task id or code).")
        source, target = None, tasks_lib.resolve_task(request.target)
        run_name = next(c for c in target.codes if c.isalnum())
        action_dim = target.action_dim
    config = algo_cls.for_tasks(config, source, target)
    directory = dataset_dir(config, target, request.data_root) if algo_cls.needs_dataset else None
    collect_config = None
    complete = False
    if directory is not None and (directory / "manifest.json").exists():
        complete = _check_dataset(directory, config, target)
    if directory is not None and not complete:
        # Missing, or partial (an interrupted collection, or one still running): only a
        # complete dataset is learned from, so the run resumes the collection (or waits
        # at its lock for the process making it).
        if config.dataset_dir:
            if (directory / "manifest.json").exists():
                from coworld_bench.data import partial_reason, read_manifest

                raise RunError(partial_reason(directory, read_manifest(directory)))
            raise RunError(f"dataset_dir {directory} holds no dataset (no manifest.json).")
        try:
            collect_config = _collect_config(config, target)
        except NotImplementedError as e:
            raise RunError(f"The target dataset this preset needs is missing and cannot be made: "
                           f"{e} (set it with --set dataset_behaviour=scripted, or "
                           f"--set dataset_dir=PATH).") from None
        except ValueError as e:
            raise RunError(f"The target dataset this preset needs cannot be made: {e}") from None
    device = resolve_device(request.device)
    run_dir = Path(request.out) / run_name / algo_cls.name / f"seed{request.seed}"
    run = Run(request, algo_cls, config, source, target, action_dim, run_dir, directory,
              collect_config, device)
    run.overrides = algo_cls.coerce_overrides(request.overrides)
    return run


def _check_dataset(directory: Path, config: TrainConfig, target: tasks_lib.TaskSpec) -> bool:
    """The dataset must be of the run's target and rendered as the run evaluates;
    returns whether it is complete."""
    from coworld_bench.data import partial_reason, read_manifest

    manifest = read_manifest(directory)
    if manifest.get("task_id") != target.id:
        raise RunError(f"The dataset {directory} holds {manifest.get('task_id')} data, not the "
                       f"run's target {target.id}: give a dataset of {target.id} with --set "
                       "dataset_dir=PATH, or run on its task.")
    for name, wanted in render_options(config).items():
        # Datasets made before an option existed were rendered with its default.
        recorded = bool(manifest.get("env", {}).get(name, getattr(EnvOptions, name)))
        if recorded != wanted:
            raise RunError(f"The dataset {directory} was rendered with {name}={recorded} but "
                           f"the run asks for {name}={wanted}: evaluation must see what the "
                           f"data shows; add --set {name}={str(recorded).lower()}.")
    return partial_reason(directory, manifest) is None


class Run:
    def __init__(self, request, algo_cls, config, source, target, action_dim, run_dir,
                 dataset_directory, collect_config, device):
        self.request = request
        self.algo_cls = algo_cls
        self.config = config
        self.source = source
        self.target = target
        self.action_dim = action_dim
        self.dir = Path(run_dir)
        self.dataset_directory = dataset_directory
        self.collect_config = collect_config
        self.device = device
        self.overrides: dict[str, Any] = {}
        self._lock = None

    # Identity ----------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "algo": self.algo_cls.name,
            "source": self.source.id if self.source else None,
            "target": self.target.id,
            "seed": self.request.seed,
            "preset": self.request.preset,
            "config": dataclasses.asdict(self.config),
        }

    def resolved_config(self) -> dict[str, Any]:
        return {**self.identity(), "action_dim": self.action_dim,
                "dataset": str(self.dataset_directory) if self.dataset_directory else None,
                "device": str(self.device),
                "overrides": dict(self.overrides),
                "versions": _versions(), "git_commit": _git_commit(),
                "command": " ".join(sys.argv)}

    def _check_existing(self) -> str:
        """'new', 'resume' or 'finished'; refuses a different config."""
        path = self.dir / CONFIG_FILE
        if not path.exists():
            return "new"
        on_disk = read_run_config(path, fix="use --force to discard the run and start again")
        ours = self.identity()
        diffs = []
        for key in ("algo", "source", "target", "seed"):
            if on_disk.get(key) != ours[key]:
                diffs.append(f"{key}: {on_disk.get(key)!r} on disk vs {ours[key]!r} asked")
        theirs_cfg, ours_cfg = on_disk.get("config", {}), ours["config"]
        # A setting newer than the run's config.json is taken at its default there.
        defaults = {f.name: f.default for f in dataclasses.fields(self.algo_cls.Config)
                    if f.default is not dataclasses.MISSING}
        for key in sorted(set(theirs_cfg) | set(ours_cfg)):
            if key not in theirs_cfg and key in defaults and ours_cfg.get(key) == defaults[key]:
                continue
            if theirs_cfg.get(key) != ours_cfg.get(key):
                diffs.append(f"{key}: {theirs_cfg.get(key)!r} on disk vs {ours_cfg.get(key)!r} asked")
        if diffs:
            if self.request.force:
                return "new"
            raise RunError(f"{self.dir} holds a run with a different config ({'; '.join(diffs)}). "
                           "Use another --out, or --force to discard it and start again.")
        if (self.dir / RESULT_FILE).exists() and not self.request.force:
            return "finished"
        has_checkpoint = any((self.dir / CHECKPOINT_DIR / n).exists() for n in CHECKPOINTS)
        return "resume" if has_checkpoint and not self.request.force else "new"

    # Execution ---------------------------------------------------------------------

    def _refuse_slow_default(self) -> None:
        """The paper preset on a CPU takes days (weeks with dataset generation): ask for
        --yes before anything is generated, and name the quick alternative."""
        if self.device.type != "cpu" or self.request.preset != "paper" or self.request.yes:
            return
        what = f"{self.config.train_steps:,} updates at the paper's model size"
        if self.collect_config is not None:
            what += (f", after generating its {self.collect_config.behaviour} target dataset "
                     f"({self.collect_config.episodes} episodes, a DreamerV2 agent trained "
                     "online)")
        command = " ".join(["coworld-bench", "run", *sys.argv[2:]]) if len(sys.argv) > 2 else \
            f"coworld-bench run --algo {self.algo_cls.name} ..."
        raise RunError(f"This is a CPU and the paper preset (the default) means {what}: days to "
                       f"weeks here. Choose one: `{command} --preset quick` (minutes), or "
                       f"`{command} --yes` to start the paper preset on this CPU anyway.")

    def _make_dir(self) -> None:
        try:
            (self.dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:
            raise RunError(f"Cannot create the run directory {self.dir}: {e.filename} is a file, "
                           "not a folder; choose another --out.") from None
        except NotADirectoryError:
            raise RunError(f"Cannot create the run directory {self.dir}: a part of the path is a "
                           "file, not a folder; choose another --out.") from None
        except PermissionError:
            raise RunError(f"Cannot create the run directory {self.dir}: permission denied; "
                           "choose a writable --out.") from None
        if not os.access(self.dir, os.W_OK):
            raise RunError(f"The run directory {self.dir} is not writable; choose a writable "
                           "--out.")

    def _acquire_lock(self) -> None:
        """An exclusive lock on the run directory for this process's life (the OS
        releases it when the process dies, however it dies)."""
        from coworld_bench import locks

        path = self.dir / LOCK_FILE
        try:
            handle = locks.hold(path)
        except locks.LockHeld as held:
            raise RunError(f"{self.dir} is being trained by {held.holder} (it holds {path}). "
                           "Wait for it to finish, or stop it first; a run directory takes one "
                           "process at a time.") from None
        self._lock = handle

    def _clear_for_restart(self) -> None:
        """--force: everything of the old run goes, the lock we hold stays."""
        for child in self.dir.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def execute(self) -> dict[str, Any]:
        print(f"Run directory: {self.dir}", flush=True)
        self._refuse_slow_default()
        self._make_dir()
        self._acquire_lock()
        try:
            return self._execute()
        finally:
            self._lock.close()  # releases the lock
            self._lock = None

    def _execute(self) -> dict[str, Any]:
        # Temporary files a killed process left behind (a checkpoint half-written when
        # the disk filled up, or at a SIGKILL) are never read; they only take space.
        for stale in [*self.dir.glob(".*.tmp"), *self.dir.glob("checkpoint/.*.tmp")]:
            stale.unlink(missing_ok=True)
        state = self._check_existing()
        if state == "finished":
            result = json.loads((self.dir / RESULT_FILE).read_text())
            random = result.get("random_action")
            beside = (f"; random actions {random['mean']:.1f} ± {random['std']:.1f}"
                      if random else "")
            print(f"{self.dir} is finished (final return {result['final']['mean']:.1f} ± "
                  f"{result['final']['std']:.1f}{beside}); use --force to train it again.")
            return result
        if self.collect_config is not None:
            from coworld_bench.data import collect

            what = ("is partial: resuming its collection in" if
                    (self.dataset_directory / "manifest.json").exists() else
                    "is missing: generating it into")
            print(f"The target dataset {what} {self.dataset_directory} "
                  f"({self.collect_config.quality}, {self.collect_config.behaviour} behaviour, "
                  f"{self.collect_config.episodes} episodes at most).")
            collect(self.collect_config, self.dataset_directory, progress=self.request.progress,
                    workers=min(os.cpu_count() or 1, self.collect_config.episodes))
        from coworld_bench.data import Dataset

        dataset = Dataset(self.dataset_directory) if self.dataset_directory else None
        if state == "new":
            self._clear_for_restart()
        (self.dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / CONFIG_FILE, self.resolved_config())
        algo, eval_env = self.build(dataset)
        try:
            step, elapsed = 0, 0.0
            if state == "resume":
                ckpt = self._load_checkpoint()
                algo.load_state_dict(ckpt["algorithm"])
                import torch

                torch.set_rng_state(ckpt["torch_rng"])
                step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
                print(f"Resuming {self.dir} from step {step}.")
            self._truncate_logs(step)
            logger = self._open_logger(step)
            try:
                result = self._train(algo, eval_env, step, elapsed, logger)
            except BaseException:
                logger.close(failed=True)
                raise
            logger.close(summary={"final/return": result["final"]["mean"],
                                  "final/return_std": result["final"]["std"],
                                  "final/steps": result["steps"]})
            return result
        finally:
            algo.close()

    def _load_checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint, or the one before it if the latest is torn or corrupt
        (a kill during its write); names the files and the fix when neither loads."""
        import torch

        errors = []
        for name in CHECKPOINTS:
            path = self.dir / CHECKPOINT_DIR / name
            if not path.exists():
                continue
            try:
                ckpt = torch.load(path, weights_only=True, map_location=self.device)
                if not isinstance(ckpt, dict) or not {"step", "algorithm"} <= set(ckpt):
                    raise ValueError("not a coworld-bench checkpoint")
            except Exception as e:  # torn zip, truncated pickle, wrong content
                errors.append(f"{path} ({type(e).__name__}: {e})")
                print(f"warning: {path} cannot be loaded ({type(e).__name__}); trying the "
                      "previous checkpoint.", file=sys.stderr)
                continue
            return ckpt
        raise RunError(f"No checkpoint of {self.dir} can be loaded: {'; '.join(errors)}. Use "
                       "--force to discard the run and start again.")

    def build(self, dataset):
        """The algorithm (seeded) and the evaluation env for this run."""
        import torch

        from coworld_bench import envs, host

        seed = self.request.seed
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN (a check for reads of
        # uninitialised memory): time spent on buffers written whole before they are read.
        torch.utils.deterministic.fill_uninitialized_memory = False
        backend = {"auto": "inductor" if self.device.type == "cuda" else None,
                   "off": None}.get(self.request.compile, self.request.compile)
        if self.device.type == "cpu":
            # Denormal floats (weights and activations decaying towards zero) run many
            # times slower on x86 CPUs; flushed to zero they change nothing that matters.
            torch.set_flush_denormal(True)
            # Freed tensors stay in the heap: no page faults for the next update's.
            host.keep_freed_memory()
        online = {**render_options(self.config), "action_dim": self.action_dim}
        make_source = make_target = None
        if self.algo_cls.needs_source:
            make_source = functools.partial(envs.make, self.source.id, seed=seed, **online)
        eval_options = self._eval_env_options(dataset)
        if self.algo_cls.needs_target_env:
            make_target = functools.partial(envs.make, self.target.id, seed=seed + 1,
                                            **eval_options)
        eval_env = envs.make(self.target.id, seed=seed, **eval_options)
        self._eval_options = eval_options
        self._make_eval_env = functools.partial(envs.make, self.target.id, seed=seed,
                                                **eval_options)
        if dataset is not None:
            image_shape = tuple(dataset.image_shape)
            state_dim = int(dataset.episodes[0].shape("state")[1]) if "state" in dataset.keys else 0
        else:
            image_shape = eval_env.observation_space["image"].shape
            state_dim = eval_env.observation_space["state"].shape[0]
        ctx = RunContext(target=self.target, source=self.source, action_dim=self.action_dim,
                         image_shape=tuple(image_shape), state_dim=int(state_dim),
                         dataset=dataset, make_source_env=make_source, device=self.device,
                         seed=seed, make_target_env=make_target,
                         make_env=functools.partial(make_env, seed=seed, defaults=online),
                         artifacts=Artifacts(self.dir / WORK_DIR), compile_backend=backend)
        algo = self.algo_cls(self.config, ctx)
        return algo, eval_env

    @property
    def data_root(self) -> Path:
        from coworld_bench.data import default_root

        return Path(self.request.data_root) if self.request.data_root else default_root()

    def evaluate_checkpoint(self, episodes: int | None = None) -> dict[str, Any]:
        """Evaluates the run's latest loadable checkpoint with the protocol (nothing is
        written)."""
        from coworld_bench.data import Dataset

        if not any((self.dir / CHECKPOINT_DIR / name).exists() for name in CHECKPOINTS):
            raise RunError(f"{self.dir} has no checkpoint yet ({self.dir / CHECKPOINT_DIR}).")
        dataset = Dataset(self.dataset_directory, checksum=False) if self.dataset_directory else None
        algo, eval_env = self.build(dataset)
        ckpt = self._load_checkpoint()
        algo.load_state_dict(ckpt["algorithm"])
        episodes = episodes or self.config.eval_episodes
        try:
            result = evaluate(algo, eval_env, episodes, self.request.seed, eval_index=10**6,
                              workers=self._eval_workers(episodes))
        finally:
            self._close_eval_workers()
            algo.close()
        return {"step": int(ckpt["step"]), **result}

    @classmethod
    def from_dir(cls, run_dir: str | Path, device: str = "auto") -> "Run":
        """Rebuilds a run from its config.json."""
        path = Path(run_dir) / CONFIG_FILE
        if not path.exists():
            raise RunError(f"{run_dir} is not a run directory (no config.json).")
        cfg = read_run_config(path, fix="restore it, or train the run again with --force")
        request = RunRequest(algo=cfg["algo"], source=cfg["source"], target=cfg["target"],
                             seed=cfg["seed"], preset=cfg["preset"], overrides=cfg["config"],
                             device=device, out=str(Path(run_dir).parents[2]), progress=False)
        if cfg["source"] is None:
            request.source = None
        run = prepare(request)
        run.dir = Path(run_dir)
        if cfg.get("dataset"):  # the data the run was trained on, wherever the root is now
            run.dataset_directory = Path(cfg["dataset"])
            run.collect_config = None
        return run

    def _eval_env_options(self, dataset) -> dict[str, Any]:
        """Evaluation sees what the data shows: the dataset's recorded env options."""

        if dataset is None:  # online algorithms: the run's own settings
            return {**render_options(self.config), "action_dim": self.action_dim}
        recorded = dataset.env_options
        names = {f.name for f in dataclasses.fields(EnvOptions)}
        options = {k: v for k, v in recorded.items() if k in names and k != "action_dim"}
        for name, value in render_options(self.config).items():
            options.setdefault(name, value)
        if options.get("camera") in ("0", "default"):
            options.pop("camera")
        options["action_dim"] = self.action_dim
        return options

    def _truncate_logs(self, step: int) -> None:
        for name in (METRICS_FILE, EVAL_FILE):
            path = self.dir / name
            if not path.exists():
                continue
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if record.get("step", 0) <= step and not record.get("final"):
                    kept.append(line)
            data = ("\n".join(kept) + "\n" if kept else "").encode()
            atomic_write_bytes(path, lambda f: f.write(data))

    def _append(self, name: str, record: dict) -> None:
        """Appends one JSON line, whole or not at all (a full disk leaves no torn line)."""
        path = self.dir / name
        with open(path, "ab") as f:
            size = f.tell()
            try:
                f.write((json.dumps(record) + "\n").encode())
                f.flush()
            except OSError as e:
                f.truncate(size)
                raise OSError(e.errno, e.strerror, str(path)) from e

    def _checkpoint(self, algo, step: int, elapsed: float) -> None:
        """Writes checkpoint/latest.pt atomically, keeping the one before it as
        previous.pt (the fallback if latest.pt is ever torn)."""
        import torch

        payload = {"step": step, "elapsed": elapsed, "algorithm": algo.state_dict(),
                   "torch_rng": torch.get_rng_state()}
        # Serialised in memory first: a full disk then fails in Python's own write, as
        # an OSError naming the file (torch's writer loses the errno), and the rotation
        # below happens only once the new checkpoint is whole on disk.
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        folder = self.dir / CHECKPOINT_DIR
        fresh = folder / f".{CHECKPOINTS[0]}.new.tmp"
        try:
            atomic_write_bytes(fresh, lambda f: f.write(buffer.getbuffer()))
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror} (a checkpoint of {buffer.tell() / 1e6:.1f} MB)",
                          str(folder / CHECKPOINTS[0])) from e
        latest = folder / CHECKPOINTS[0]
        if latest.exists():
            os.replace(latest, folder / CHECKPOINTS[1])
        os.replace(fresh, latest)

    def _evaluate(self, algo, eval_env, eval_index: int, bar, record_values: bool = False):
        """One evaluation point, its episodes shown as they finish."""
        from tqdm.auto import tqdm

        cfg = self.config
        if bar is not None:
            bar.set_description(f"evaluating {self.algo_cls.name}")
        episodes = tqdm(total=cfg.eval_episodes, desc="evaluation", unit="ep", leave=False,
                        disable=not self.request.progress, dynamic_ncols=True)
        try:
            return evaluate(algo, eval_env, cfg.eval_episodes, self.request.seed, eval_index,
                            record_values=record_values, discount=cfg.discount,
                            progress=episodes, workers=self._eval_workers(cfg.eval_episodes))
        finally:
            episodes.close()
            if bar is not None:
                bar.set_description(f"train {self.algo_cls.name}")

    def _eval_workers(self, episodes: int):
        """The run's evaluation simulators in worker processes, started at the first
        call (``_train`` calls it before its first update, so that the workers start
        while the update, e.g. an online prefill, runs) and kept until the run ends;
        None when episodes run one after another here. By default one per episode, up
        to twice the cores: this process only acts (a few ms per step), while each
        simulator renders for longer, so more simulators than cores still overlap.
        Three quick CoWorld episodes on 2 cores (``coworld_bench.evaluation.evaluate``, Mesa
        rendering in the calling thread): 14.6 s one after another here, 12.4 s with 2
        workers, 9.6 s with 3, whose start took 3.8 s."""
        from coworld_bench.evaluation import EnvWorkers

        wanted = self.request.eval_workers
        size = min(episodes, wanted if wanted is not None else 2 * (os.cpu_count() or 1))
        if size <= 1:
            return None
        if getattr(self, "_workers", None) is None:
            self._workers = EnvWorkers(self._make_eval_env, size)
        return self._workers

    def _close_eval_workers(self) -> None:
        if getattr(self, "_workers", None) is not None:
            self._workers.close()
            self._workers = None

    def _estimate(self, algo, eval_env, seconds_per_update: float, remaining: int,
                  elapsed: float = 0.0, workers=None) -> None:
        """Prints the run's wall time (training and evaluations: what result.json's
        wall_time_s measures) from measured step times, on lines of its own."""
        from tqdm.auto import tqdm

        cfg = self.config
        probe = evaluate_steps_time(algo, eval_env)
        done = cfg.train_steps - remaining
        # Evaluations still to come: at multiples of eval_every below train_steps, then
        # the final one.
        n_evals = (((cfg.train_steps - 1) // cfg.eval_every - done // cfg.eval_every)
                   if cfg.eval_every else 0) + 1
        # Episodes side by side in the workers, as many at once as there are cores.
        side_by_side = min(workers.size, os.cpu_count() or 1) if workers is not None else 1
        rounds = -(-cfg.eval_episodes // side_by_side)
        eval_seconds = n_evals * rounds * self.target.episode_steps * probe
        rest = remaining * seconds_per_update + eval_seconds
        how = (f"{seconds_per_update:.3g} s/update x {remaining} updates + {n_evals} "
               f"evaluations x {rounds} round{'s' * (rounds > 1)} of episodes"
               f"{f' ({side_by_side} side by side)' if side_by_side > 1 else ''} x "
               f"{self.target.episode_steps} steps at {probe * 1000:.0f} ms/step")
        self.estimated_wall_time_s = elapsed + rest
        tqdm.write(f"Estimated wall time on this device ({self.device}): "
                   f"{_format_hours(elapsed + rest)} ({_format_hours(elapsed)} so far; {how}).")
        for line in self.algo_cls.schedule_lines(cfg):
            tqdm.write(f"  {line}")

    def _open_logger(self, step: int):
        """TensorBoard (events of steps after ``step``, a killed session's, hidden) and
        the wandb mirror if asked: its config is config.json's and the protocol hash."""
        from coworld_bench.protocol import protocol_hash

        config = None
        if self.request.logger == "wandb":
            config = {**self.resolved_config(), "protocol_hash": protocol_hash()}
        return logging_backends.open_logger(self.request.logger, self.dir, self.dir / TB_DIR,
                                            purge_step=step or None, config=config)

    def _train(self, algo, eval_env, step: int, elapsed: float, logger) -> dict[str, Any]:
        import torch
        from tqdm.auto import tqdm

        cfg = self.config
        if self.device.type == "cpu" and self.request.preset == "paper":
            print("This is a CPU: the paper preset needs a GPU to finish in days. For a run that "
                  "finishes in minutes, add --preset quick. Timing the first updates for an "
                  "estimate...", flush=True)
        bar = tqdm(total=cfg.train_steps, initial=step, desc=f"train {self.algo_cls.name}",
                   unit="upd", disable=not self.request.progress, dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        window_steps: dict[str, list[int]] = {}
        # Every scalar since the last record is checked for NaN/inf before a record, an
        # evaluation or a checkpoint: a run stops at its first non-finite update, and its
        # checkpoints only ever hold finite updates.
        last_good = step if step else None

        def check_finite():
            bad = first_non_finite(window, window_steps)
            if bad is None:
                return
            update, key, value = bad
            kept = (f"the last good checkpoint, update {last_good} "
                    f"({self.dir / CHECKPOINT_DIR / CHECKPOINTS[0]}), stays the one a re-run "
                    "resumes from" if last_good is not None else
                    "no checkpoint was written")
            raise RunError(
                f"Update {update}: {key} is {value} (not finite); training stopped and {kept}. "
                "Check the dataset for non-finite values (coworld-bench data verify DIR); a "
                "re-run repeats the same updates.")
        # Periodic evaluations done so far: those at multiples of eval_every below
        # train_steps (the final evaluation is the next index, fixed by the schedule,
        # also when a run resumes at train_steps to redo it).
        eval_index = min(step, cfg.train_steps - 1) // cfg.eval_every if cfg.eval_every else 0
        # Five updates are timed for the wall-time estimate: from the second of this
        # session (the first carries warm-up work: allocations, an online agent's
        # prefill), and only once the evaluation workers are up (their start-up shares
        # the cores with the first updates); only the updates themselves are timed,
        # never an evaluation or a checkpoint.
        probe_count = min(5, cfg.train_steps - step - 1)
        probe_from, probe_until = None, None
        probe_seconds = 0.0
        session_start = step
        start = time.perf_counter() - elapsed
        stop = _InterruptFlag()
        try:
            workers = self._eval_workers(cfg.eval_episodes)  # start beside the first updates
            while step < cfg.train_steps:
                if (probe_from is None and probe_count > 0 and step > session_start
                        and (workers is None or workers.ready())):
                    probe_count = min(probe_count, cfg.train_steps - step)
                    probe_from, probe_until = step, step + probe_count
                update_start = time.perf_counter()
                scalars = algo.train_step(step)
                if probe_from is not None and probe_from <= step < probe_until:
                    probe_seconds += time.perf_counter() - update_start
                step += 1
                bar.update(1)
                for k, v in scalars.items():  # tensors stay on the device until logged
                    window.setdefault(k, []).append(v.detach() if torch.is_tensor(v) else v)
                    window_steps.setdefault(k, []).append(step)
                if probe_count > 0 and step == probe_until:
                    check_finite()  # the estimate times the policy in the simulator
                    self._estimate(algo, eval_env, probe_seconds / probe_count,
                                   remaining=cfg.train_steps - step,
                                   elapsed=time.perf_counter() - start, workers=workers)
                logs = step % cfg.log_every == 0 or step == cfg.train_steps
                evaluates = bool(cfg.eval_every) and step % cfg.eval_every == 0 \
                    and step < cfg.train_steps
                saves = step % cfg.checkpoint_every == 0 or step == cfg.train_steps \
                    or stop.raised
                if logs or evaluates or saves:
                    check_finite()
                if logs:
                    record = {"step": step, **window_means(window),
                              "wall_time": time.perf_counter() - start}
                    self._append(METRICS_FILE, record)
                    for k, v in record.items():
                        if k != "step":
                            logger.scalar(f"train/{k}", v, step)
                    bar.set_postfix({k: f"{record[k]:.3g}" for k in list(window)[:3]})
                    window, window_steps = {}, {}
                if evaluates:
                    eval_index += 1
                    result = self._evaluate(algo, eval_env, eval_index, bar)
                    self._append(EVAL_FILE, {"step": step, **result})
                    _eval_scalars(logger, result, step)
                if saves:
                    logger.flush()
                    self._checkpoint(algo, step, time.perf_counter() - start)
                    last_good = step
                if stop.raised and step < cfg.train_steps:
                    raise RunInterrupted(
                        f"Interrupted at update {step} of {cfg.train_steps}; the checkpoint is "
                        f"written. Re-run the same command to resume.")
        except BaseException:
            self._close_eval_workers()
            raise
        finally:
            stop.restore()
            bar.close()
        try:
            final = self._evaluate(algo, eval_env, eval_index + 1, None, record_values=True)
        finally:
            self._close_eval_workers()
        trace = final.pop("trace", None)
        self._append(EVAL_FILE, {"step": step, "final": True, **final})
        _eval_scalars(logger, final, step)
        logger.flush()
        value_summary = None
        if trace is not None:
            atomic_write_bytes(self.dir / VALUE_TRACE_FILE, lambda f: np.savez(f, **trace))
            has_value = bool(np.isfinite(trace["value"]).all())
            error = trace["value"] - trace["discounted_return"]
            value_summary = {"mean_value": float(trace["value"].mean()) if has_value else None,
                             "mean_discounted_return": float(trace["discounted_return"].mean()),
                             "mean_error": float(error.mean()) if has_value else None,
                             "discount": cfg.discount}
        curve = [json.loads(line) for line in (self.dir / EVAL_FILE).read_text().splitlines()]
        wall_time = time.perf_counter() - start
        random = self._random_baseline(eval_index + 1) if cfg.random_baseline else None
        result = {
            **self.identity(),
            "steps": step,
            "final": final,
            "eval_curve": [{"step": r["step"], "mean": r["mean"]} for r in curve],
            "value_trace": value_summary,
            "random_action": random,
            "protocol": protocol_record(),
            "wall_time_s": wall_time,
            # The estimate printed near the start of this session (null if it ran too few
            # updates to time): a check of the estimate against the run itself.
            "estimated_wall_time_s": getattr(self, "estimated_wall_time_s", None),
        }
        atomic_write_json(self.dir / RESULT_FILE, result)
        print(f"Finished {self.dir}: return {final['mean']:.1f} ± {final['std']:.1f} over "
              f"{cfg.eval_episodes} episodes (seed {self.request.seed}, evaluation point "
              f"{eval_index + 1}).")
        if random is not None:
            print(f"  Uniformly random actions on the same evaluation seeds: "
                  f"{random['mean']:.1f} ± {random['std']:.1f}.")
        return result

    def _random_baseline(self, eval_index: int) -> dict[str, Any]:
        """The random-action return of the final evaluation's episodes (same task, env
        options and seeds), from the data root's cache when it has it."""
        from coworld_bench.evaluation import random_action_baseline

        return random_action_baseline(self.target.id, self.config.eval_episodes,
                                      self.request.seed, eval_index,
                                      cache_dir=self.data_root / "random-actions",
                                      **self._eval_options)



class RunInterrupted(UserError):
    """Ctrl-C (SIGINT) during training: the checkpoint is written, the run resumes."""


class _InterruptFlag:
    """The first SIGINT asks training to stop after the update in progress (then a
    checkpoint is written); a second one interrupts at once."""

    def __init__(self):
        import signal

        self.raised = False
        self._signal = signal
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C stays as it is
            self._previous = None

    def _handle(self, signum, frame):
        self.raised = True
        print("\nInterrupt: stopping after this update (Ctrl-C again to stop at once).",
              file=sys.stderr, flush=True)
        self._signal.signal(self._signal.SIGINT, self._signal.default_int_handler)

    def restore(self) -> None:
        if self._previous is not None:
            self._signal.signal(self._signal.SIGINT, self._previous)
            self._previous = None


def evaluate_steps_time(algo, env, steps: int = 10) -> float:
    """Seconds per evaluation step (policy + environment), measured without touching
    any random state the run depends on."""
    import torch

    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        obs, _ = env.reset(seed=12345)
        state = algo.initial_state()
        for _ in range(2):  # untimed: the first renders and policy calls warm caches up
            action, state = algo.policy(obs, state, deterministic=True)
            obs, *_ = env.step(action)
        start = time.perf_counter()
        for _ in range(steps):
            action, state = algo.policy(obs, state, deterministic=True)
            obs, *_ = env.step(action)
        seconds = (time.perf_counter() - start) / steps
    np.random.set_state(numpy_state)
    return seconds
