"""Sweeps: the paper's grids as one command, on this machine or on a SLURM cluster.

``coworld-bench sweep`` expands algorithms x pairs (or a named grid of the paper) x
seeds x grid points into jobs; each job is exactly one ``coworld-bench run`` command,
so it has the run lifecycle's run directory, lock, resume and skip-when-finished. This
module schedules nothing itself beyond a pool of processes: on one machine it keeps
``--jobs`` runs going (GPUs handed out through ``CUDA_VISIBLE_DEVICES``); on a cluster
it submits them through submitit as a SLURM job array, each job requeued on preemption
or timeout and resumed from the run's checkpoint.

A sweep folder ``DIR`` holds::

    sweep.json                the manifest: what was asked, every job's run directory,
                              state, exit status, log and attempts (written atomically,
                              by the sweep process only)
    sweep.lock                held by the sweep process while it runs (one at a time)
    logs/<job>.log            each job's output, one "=== coworld-bench sweep: attempt"
                              header per attempt
    submitit/                 submitit's own files (cluster executor)
    <pair or target>/<algo>/seed<N>/             a run at the default settings
    <k>=<v>[,<k2>=<v2>]/<pair or target>/<algo>/seed<N>/   a run at a grid point

A grid point's settings name its folder, so ``coworld-bench report DIR`` finds every
run and tells the points apart (it reads each run's settings from its config.json). A
grid value ``default`` means "not set": that point is the default run, in the default
folder, shared with any other sweep that asks for it.

Job states: *pending* (not started, or interrupted: the next sweep resumes it),
*running* (a process holds the run's lock: this sweep's, or one started elsewhere),
*finished* (result.json written) and *failed* (the command exited with an error; its
log says why). Re-running the sweep command runs what is pending or failed; a
finished job is not started again; a run locked by another process (e.g. a job that
outlived a killed sweep) is waited for, not started twice.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import hashlib
import io
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from coworld_bench import locks
from coworld_bench import tasks as tasks_lib
from coworld_bench.errors import UserError

__all__ = ["SweepError", "Block", "NamedGrid", "NAMED_GRIDS", "Job", "SweepRequest",
           "expand", "gpu_hours", "dry_run_text", "run_sweep", "status_rows", "status_text",
           "RunJob", "parse_slurm_time", "parse_mem_gb", "MANIFEST", "STATES"]

MANIFEST = "sweep.json"
SWEEP_LOCK = "sweep.lock"
LOGS = "logs"
SUBMITIT_DIR = "submitit"
STATES = ("pending", "running", "finished", "failed")
ATTEMPT_HEADER = "=== coworld-bench sweep: attempt"
EXECUTORS = ("local", "slurm", "submitit-local")
# Exit statuses of ``coworld-bench run``: 2 = a user error (among them "the run
# directory is locked by another process"), 130 = interrupted with a checkpoint.
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 130


class SweepError(UserError):
    """A sweep that cannot start as asked; the message says why and what to do."""


# Named grids ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Block:
    """Algorithms (in the paper's row order) on pairs with fixed settings: each runs
    on every pair, except those ``per_target`` (offline-only ones, and multi-source
    CoWorld, which chooses its own sources): once per distinct target of the pairs."""

    pairs: tuple[str, ...]
    algos: tuple[str, ...]
    per_target: tuple[str, ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()
    # Settings of the grid's scale (e.g. the updates of a study): every run of the block
    # gets them, as it gets --set, but they name no grid point (no folder of their own).
    scale: tuple[tuple[str, Any], ...] = ()

    @property
    def pair_algos(self) -> tuple[str, ...]:
        return tuple(a for a in self.algos if a not in self.per_target)

    @property
    def target_algos(self) -> tuple[str, ...]:
        return tuple(a for a in self.algos if a in self.per_target)


@dataclasses.dataclass(frozen=True)
class NamedGrid:
    name: str
    about: str
    blocks: tuple[Block, ...]
    preset: str | None = None  # the preset its scale is written for (None: any)

    @property
    def algos(self) -> list[str]:
        seen: dict[str, None] = {}
        for block in self.blocks:
            seen.update(dict.fromkeys(block.algos))
        return list(seen)


MW_PAIRS = tasks_lib.PAPER_PAIRS["metaworld"]
DMC_PAIRS = tasks_lib.PAPER_PAIRS["dmc"]
RD_PAIRS = tasks_lib.PAPER_PAIRS["metaworld-robodesk"]
OFFLINE_BASELINES = ("offline-dv2", "drq-bc", "cql", "curl", "lompo")

# Figure 6 (sensitivity on Meta-World DC->BP). The figure's tick values are not in the
# text of the paper; these span what its text discusses (beta2 "too small" to "too
# large", k over [0.1, 0.7] and beyond, alpha within [1, 3] and beyond) around Table 7's
# Meta-World values beta2=1, k=0.3, alpha=2, which are the default run itself.
SENSITIVITY_VALUES = {"beta2": (0.1, 0.5, 2.0, 5.0), "k": (0.1, 0.5, 0.7, 0.9),
                      "alpha": (0.5, 1.0, 3.0, 5.0)}
# study:cpu: every algorithm gets CoWorld's quick budget of 996 updates. CoWorld spends
# 300 of them pretraining its source online on 1,500 env steps (and 96 warming its target
# world model up), and DV2 Finetune pretrains as long here; Offline DV2 trains its world model for half of them (as its quick preset does),
# DrQ+BC and BC decay their exploration std over half of them (likewise).
STUDY_UPDATES = 996
STUDY_SCALE = {
    "offline-dv2": (("train_steps", STUDY_UPDATES), ("model_updates", STUDY_UPDATES // 2)),
    "dv2-finetune": (("train_steps", STUDY_UPDATES), ("pretrain_env_steps", 1_500)),
    "drq-bc": (("train_steps", STUDY_UPDATES), ("std_decay_updates", STUDY_UPDATES // 2)),
    "bc": (("train_steps", STUDY_UPDATES), ("std_decay_updates", STUDY_UPDATES // 2)),
}
ABLATIONS = ("coworld-no-state-align", "coworld-no-reward-align",
             "coworld-no-value-constraint", "coworld-brute-force")


def _named_grids() -> dict[str, NamedGrid]:
    table2 = ("offline-dv2", "drq-bc", "cql", "curl", "lompo", "dv2-finetune",
              "dv2-finetune-ewc", "lompo-finetune", "coworld", "coworld-multisource")
    table3 = ("offline-dv2", "drq-bc", "cql", "curl", "lompo", "dv2-finetune",
              "lompo-finetune", "coworld")
    table4 = ("offline-dv2", "drq-bc", "lompo", "dv2-finetune", "coworld")
    per_target = ("bc", *OFFLINE_BASELINES, "coworld-multisource")
    grids = [
        NamedGrid("paper:table2", "Table 2: Meta-World, medium-replay targets, the paper's 6 "
                                  "pairs (offline baselines and multi-source CoWorld once per "
                                  "target)",
                  (Block(MW_PAIRS, table2, per_target),)),
        NamedGrid("paper:table3", "Table 3: DMC cross-dynamics, medium-replay targets",
                  (Block(DMC_PAIRS, table3, per_target),)),
        NamedGrid("paper:table4", "Appendix table: DMC cross-dynamics, medium-expert targets",
                  (Block(DMC_PAIRS, table4, per_target,
                         settings=(("dataset_quality", "medium-expert"),)),)),
        NamedGrid("paper:robodesk", "Figure 4 (Meta-World -> RoboDesk) and the "
                                    "domain-similarity tables 4-6 (low-dimensional source, "
                                    "sparse source reward, one multi-task world model); DV2 "
                                    "Finetune has no sparse-source setting here",
                  (Block(RD_PAIRS, ("offline-dv2", "dv2-finetune", "coworld",
                                    "coworld-multisource"), per_target),
                   Block(RD_PAIRS[:2], ("coworld",), settings=(("source_obs", "state"),)),
                   Block(RD_PAIRS[:2], ("coworld",), settings=(("source_sparse_reward", True),)),
                   Block(RD_PAIRS[:2], ("multitask-dv2",)))),
        NamedGrid("matrix:mw", "Figure 3 (left): CoWorld on all 30 ordered Meta-World pairs, "
                               "beside Offline DV2 on each target",
                  (Block(tuple(p.name for p in tasks_lib.metaworld_transfer_pairs()),
                         ("offline-dv2", "coworld"), per_target),)),
        NamedGrid("paper:ablations", "Figure 5a: CoWorld and its ablations on RoboDesk Push "
                                     "Button (source Button Press)",
                  (Block(("BP-PG",), ("coworld",) + ABLATIONS),)),
        NamedGrid("paper:sensitivity", "Figure 6: beta2, k and alpha of CoWorld on Meta-World "
                                       "DC->BP, one at a time (the default run is the paper's "
                                       "value; DV2 Finetune is the figure's reference line)",
                  (Block(("DC-BP",), ("dv2-finetune", "coworld")),
                   *[Block(("DC-BP",), ("coworld",), settings=((name, value),))
                     for name, values in SENSITIVITY_VALUES.items() for value in values])),
    ]
    study = ("DC-BP", "WC-DC")  # Table 2 pairs whose targets have scripted quick datasets
    grids.append(NamedGrid(
        "study:cpu", "A study sized for a 2-core CPU (--preset quick, 3 seeds: a few "
                     "hours): CoWorld, Offline DV2, DV2 Finetune, DrQ+BC and BC on two "
                     "Table-2 pairs, every run 996 updates (CoWorld's quick schedule), plus "
                     "CoWorld w/o Max on DC-BP",
        tuple(Block(pairs, (algo,), per_target, scale=scale) for pairs, algo, scale in (
            (study, "coworld", ()),
            (study, "offline-dv2", STUDY_SCALE["offline-dv2"]),
            (study, "dv2-finetune", STUDY_SCALE["dv2-finetune"]),
            (study, "drq-bc", STUDY_SCALE["drq-bc"]),
            (study, "bc", STUDY_SCALE["bc"]),
            (study[:1], "coworld-brute-force", ()))),
        preset="quick"))
    return {g.name: g for g in grids}


NAMED_GRIDS = _named_grids()


# Jobs ------------------------------------------------------------------------------------

def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_SAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")


def variant_folder(variant: tuple[tuple[str, str], ...]) -> str:
    """The folder of a grid point: ``beta2=0.5`` (``k=v`` joined by commas, sorted);
    characters a folder name cannot hold are replaced and a short hash of the exact
    settings keeps two such points apart."""
    text = ",".join(f"{k}={v}" for k, v in variant)
    safe = _SAFE.sub("_", text)
    if safe != text or safe.startswith("."):
        safe = f"{safe.lstrip('._')}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return safe


@dataclasses.dataclass(frozen=True)
class Job:
    """One ``coworld-bench run``: an algorithm on a pair (or a target), a seed and the
    settings of its grid point (``variant``, sorted ``(key, text)`` pairs)."""

    algo: str
    pair: str | None
    target: str | None
    seed: int
    variant: tuple[tuple[str, str], ...] = ()
    scale: tuple[tuple[str, str], ...] = ()  # the named grid's scale settings (no folder)

    @property
    def run_name(self) -> str:
        """The runner's folder name: the pair's shell name, or the target's code."""
        if self.pair is not None:
            return tasks_lib.resolve_pair(self.pair).name
        task = tasks_lib.resolve_task(self.target)
        return next(c for c in task.codes if c.isalnum())

    @property
    def out(self) -> str:
        """The ``--out`` of the run, relative to the sweep folder."""
        return variant_folder(self.variant) if self.variant else "."

    @property
    def id(self) -> str:
        """The run directory relative to the sweep folder (unique per job)."""
        parts = [variant_folder(self.variant)] if self.variant else []
        return "/".join([*parts, self.run_name, self.algo, f"seed{self.seed}"])

    @property
    def log_name(self) -> str:
        return self.id.replace("/", "__") + ".log"

    @property
    def where(self) -> str:
        return self.run_name


@dataclasses.dataclass
class SweepRequest:
    """What ``coworld-bench sweep`` was asked (see ``build_parser`` in the CLI)."""

    algos: list[str] | None
    pairs: list[str]
    seeds: list[int]
    preset: str = "paper"
    settings: list[str] = dataclasses.field(default_factory=list)  # --set k=v (every job)
    grid: list[str] = dataclasses.field(default_factory=list)  # --grid k=v1,v2
    out: str = "sweeps"
    executor: str = "local"
    jobs: int | None = None
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    slurm_partition: str | None = None
    slurm_time: str = "24:00:00"
    slurm_mem: str | None = None
    slurm_account: str | None = None
    slurm_setup: list[str] = dataclasses.field(default_factory=list)
    max_requeues: int = 20
    yes: bool = False
    wait: bool = True
    poll_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_grid(items: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``["beta2=0.5,1", "k=default,0.1"]`` -> ``[("beta2", ["0.5", "1"]), ...]``."""
    out: list[tuple[str, list[str]]] = []
    for item in items or []:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not _split(values):
            raise SweepError(f"--grid expects KEY=V1,V2,... (e.g. beta2=0.5,1,2), got {item!r}.")
        if key in {k for k, _ in out}:
            raise SweepError(f"--grid {key} is given twice; give its values once, "
                             f"comma-separated.")
        out.append((key, _split(values)))
    return out


def _parse_sets(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set expects key=value, got {item!r}.")
        out[key.strip()] = value
    return out


def _valid_grid_names() -> str:
    return ", ".join(NAMED_GRIDS)


def _blocks(request: SweepRequest) -> list[Block]:
    """The request as blocks: its named grids, or its algorithms on its pairs."""
    names = [p for p in request.pairs if ":" in p]
    if names and len(names) != len(request.pairs):
        raise SweepError("Give --pairs as named grids (e.g. paper:table2) or as pairs and "
                         "targets (e.g. WW-WD,WU), not both.")
    if not request.pairs:
        raise SweepError(f"--pairs is empty: give pairs (BP-DC,WW-WD), targets (WD) or a named "
                         f"grid ({_valid_grid_names()}).")
    if names:
        blocks = []
        for name in names:
            grid = NAMED_GRIDS.get(name)
            if grid is None:
                raise SweepError(f"Unknown named grid {name!r}; valid named grids: "
                                 f"{_valid_grid_names()}.")
            if grid.preset is not None and request.preset != grid.preset:
                raise SweepError(f"{name} is sized for --preset {grid.preset} (its runs' "
                                 f"updates are set for that scale), not {request.preset!r}: "
                                 f"add --preset {grid.preset}.")
            blocks += grid.blocks
        if request.algos:
            offered = list(dict.fromkeys(a for b in blocks for a in b.algos))
            missing = [a for a in request.algos if a not in offered]
            if missing:
                raise SweepError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                                 f"not in {', '.join(names)}; its algorithms: "
                                 f"{', '.join(offered)}.")
            keep = set(request.algos)
            blocks = [dataclasses.replace(b, algos=tuple(a for a in b.algos if a in keep))
                      for b in blocks]
        return [b for b in blocks if b.algos]
    if not request.algos:
        raise SweepError("Give --algos a,b (coworld-bench list algos), or a named grid in "
                         f"--pairs ({_valid_grid_names()}), which names its own algorithms.")
    from coworld_bench import registry

    per_target = tuple(a for a in request.algos  # an unknown name raises, listing valid ones
                       if not registry.get(a).needs_source)
    return [Block(tuple(request.pairs), tuple(dict.fromkeys(request.algos)), per_target)]


def _pair_and_target(name: str) -> tuple[str | None, str]:
    """``"WW-WD"`` -> (``"WW-WD"``, ``"WD"``); a target code or full id (``"WD"``,
    ``"dmc-walker-downhill"``) -> (None, ``"WD"``); unknown names raise, listing the
    valid ones."""
    try:
        task = tasks_lib.resolve_task(name)
    except tasks_lib.UnknownTaskError:
        if "-" not in name:
            raise
        pair = tasks_lib.resolve_pair(name)
        return pair.name, next(c for c in pair.target.codes if c.isalnum())
    return None, next(c for c in task.codes if c.isalnum())


def expand(request: SweepRequest) -> list[Job]:
    """Every job of the request, seed-major (seed 0 of every cell first, so partial
    results already fill a table), without duplicates."""
    if not request.seeds:
        raise SweepError("--seeds is empty; give e.g. --seeds 0,1,2.")
    grid = parse_grid(request.grid)
    common = _parse_sets(request.settings)
    for key, _ in grid:
        if key in common:
            raise SweepError(f"{key} is both in --set and --grid; give it in one of them.")
    points = [tuple((k, v) for k, v in zip([k for k, _ in grid], values) if v != "default")
              for values in itertools.product(*[vs for _, vs in grid])]
    jobs: list[Job] = []
    for block in _blocks(request):
        settings = tuple((k, _plain(v)) for k, v in block.settings)
        scale = tuple(sorted((k, _plain(v)) for k, v in block.scale))
        for key, _ in settings + scale:
            if key in common or key in {k for k, _ in grid}:
                raise SweepError(f"{key} is a setting of the named grid itself "
                                 f"({key}={dict(settings + scale)[key]}); leave it out of "
                                 "--set/--grid, or sweep its pairs without the named grid.")
        pairs, targets = [], []
        for name in block.pairs:
            pair, target = _pair_and_target(name)
            if pair is not None:
                pairs.append(pair)
            if target not in targets:
                targets.append(target)
        if block.pair_algos and not pairs:
            raise SweepError(f"{', '.join(block.pair_algos)} train with an online source: give "
                             "pairs SOURCE-TARGET in --pairs (e.g. WW-WD), not only targets.")
        for point in points:
            variant = tuple(sorted(settings + point))
            for algo in block.algos:
                if algo in block.per_target:
                    jobs += [Job(algo, None, t, s, variant, scale)
                             for t in targets for s in request.seeds]
                else:
                    jobs += [Job(algo, p, None, s, variant, scale)
                             for p in pairs for s in request.seeds]
    unique = list(dict.fromkeys(jobs))
    ids: dict[str, Job] = {}
    for job in unique:
        if ids.setdefault(job.id, job) != job:
            raise SweepError(f"{job.id} is asked twice with different scale settings "
                             f"({dict(ids[job.id].scale)} and {dict(job.scale)}).")
    order = {job: i for i, job in enumerate(unique)}
    return sorted(unique, key=lambda j: (request.seeds.index(j.seed), order[j]))


def job_overrides(request: SweepRequest, job: Job) -> dict[str, str]:
    return {**_parse_sets(request.settings), **dict(job.scale), **dict(job.variant)}


def run_command(request: SweepRequest, job: Job, root: Path) -> list[str]:
    """The job's ``coworld-bench run`` command (absolute paths)."""
    cmd = [sys.executable, "-m", "coworld_bench.cli", "run", "--algo", job.algo]
    cmd += ["--pair", job.pair] if job.pair is not None else ["--target", job.target]
    cmd += ["--seed", str(job.seed), "--preset", request.preset]
    for key, value in job_overrides(request, job).items():
        cmd += ["--set", f"{key}={value}"]
    cmd += ["--out", str((root / job.out).resolve()) if job.variant else str(root.resolve()),
            "--quiet"]
    if request.yes:
        cmd.append("--yes")
    return cmd


def display_command(command: list[str]) -> str:
    words = list(command)
    if words[:3] == [sys.executable, "-m", "coworld_bench.cli"]:
        words = ["coworld-bench", *words[3:]]
    return shlex.join(words)


def check_settings(request: SweepRequest, jobs: list[Job], log=print) -> dict[str, str | None]:
    """Every distinct algorithm x settings x task of the sweep resolved as the runner
    will (presets, ``--set`` types and ranges, per-task resolution) before anything
    starts. Algorithms that fail to import are reported, not fatal (their jobs fail
    with the error in their logs). Returns each job's target dataset directory (None:
    unknown or none), which the scheduler uses to let one run make a missing dataset
    while the others that need it wait."""
    from coworld_bench import registry, runner
    from coworld_bench.algorithm import PRESETS

    if request.preset not in PRESETS:
        raise SweepError(f"Unknown preset {request.preset!r}; valid presets: {', '.join(PRESETS)}.")
    warnings, resolved, classes = [], {}, {}
    datasets: dict[str, str | None] = {}
    for job in jobs:
        if job.algo not in classes:
            try:
                classes[job.algo] = registry.get(job.algo)
            except registry.UnknownAlgorithmError:
                raise
            except Exception as e:  # noqa: BLE001 - a module being written must not stop the rest
                classes[job.algo] = None
                warnings.append(f"{job.algo} cannot be loaded ({type(e).__name__}: {e}); its "
                                "settings are not checked and its jobs will fail until it loads.")
        cls = classes[job.algo]
        if cls is None:
            datasets[job.id] = None
            continue
        wants_pair = job.pair is not None
        if cls.needs_source != wants_pair:
            raise SweepError(f"{job.algo} {'needs' if cls.needs_source else 'takes no'} online "
                             f"source, but the sweep runs it on "
                             f"{'a pair' if wants_pair else 'a target'} (a named grid out of "
                             "date with the algorithm).")
        key = (job.algo, job.pair, job.target, job.variant, job.scale)
        if key not in resolved:
            try:
                config = cls.make_config(request.preset, job_overrides(request, job))
                if job.pair is not None:
                    pair = tasks_lib.resolve_pair(job.pair)
                    source, target = pair.source, pair.target
                else:
                    source, target = None, tasks_lib.resolve_task(job.target)
                config = cls.for_tasks(config, source, target)
            except UserError as e:
                raise SweepError(f"{job.id}: {e}") from None
            resolved[key] = (str(runner.dataset_dir(config, target)) if cls.needs_dataset
                             else None)
        datasets[job.id] = resolved[key]
    for line in warnings:
        log(f"warning: {line}")
    check_existing_runs(request, [j for j in jobs if classes.get(j.algo) is not None])
    return datasets


def check_existing_runs(request: SweepRequest, jobs: list[Job]) -> None:
    """Run directories the sweep's jobs would resume must hold the same config as the
    jobs ask for (a re-run with a changed --set would otherwise launch every job only
    for each to stop on "a different config"). Raises naming them, before any start."""
    from coworld_bench import runner

    root = Path(request.out)
    clashes = []
    for job in jobs:
        if not (root / job.id / "config.json").exists():
            continue
        run_request = runner.RunRequest(
            algo=job.algo, pair=job.pair, target=job.target, seed=job.seed,
            preset=request.preset, overrides=job_overrides(request, job),
            out=str(root / job.out), yes=True)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # pair warnings: said per run
                runner.prepare(run_request)._check_existing()
        except UserError as e:
            clashes.append(f"{job.id}: {e}")
    if clashes:
        raise SweepError(
            f"{len(clashes)} of the sweep's runs already exist in {root} with other settings "
            f"than this command gives; nothing was started. Give the settings they were made "
            f"with (sweep.json's requests list them), another --out, or --force in each run. "
            f"First: {clashes[0]}")


def dataset_ready(path: str | None) -> bool:
    """A complete dataset (or none needed, or one that cannot be read: its run
    reports that itself)."""
    if path is None:
        return True
    manifest = Path(path) / "manifest.json"
    if not manifest.exists():
        return False
    try:
        return json.loads(manifest.read_text()).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return True


# GPU-hours from the paper's training-time table -----------------------------------------

def training_minutes(paper_dir: Path | None = None) -> dict[str, tuple[float, int]]:
    """The paper's training-time table (one RTX 3090, Meta-World HP->BT): normalised
    model name -> (training minutes, iterations)."""
    if paper_dir is None:
        paper_dir = Path(__file__).resolve().parents[1] / "results" / "paper"
    path = Path(paper_dir) / "table_training_efficiency.csv"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {_norm(row["model"]): (float(row["training_min"]), int(row["iterations"]))
            for row in csv.DictReader(lines)}


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", name).lower()


def paper_name(algo: str) -> str | None:
    from coworld_bench import registry

    try:
        return registry.get(algo).display_name()
    except Exception:  # noqa: BLE001 - unknown cost, not an error, in a dry run
        return None


def gpu_hours(jobs: list[Job], table: dict[str, tuple[float, int]] | None = None
              ) -> dict[str, float | None]:
    """GPU-hours per run of each algorithm of ``jobs``: the paper's training minutes
    of the model of the same paper name / 60 (None: the table lacks it)."""
    table = training_minutes() if table is None else table
    out: dict[str, float | None] = {}
    for algo in dict.fromkeys(j.algo for j in jobs):
        name = paper_name(algo)
        minutes = table.get(_norm(name)) if name else None
        out[algo] = minutes[0] / 60.0 if minutes else None
    return out


def _hours(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.1f}"


def dry_run_text(request: SweepRequest, jobs: list[Job], root: Path) -> str:
    """The jobs by cell (algorithm x pair or target x grid point: seeds, runs, folder)
    and the estimated GPU-hours from the paper's training-time table."""
    from coworld_bench.cli import _table

    per_run = gpu_hours(jobs)
    cells: dict[tuple, list[Job]] = {}
    for job in jobs:
        cells.setdefault((job.variant, job.algo, job.where), []).append(job)
    rows, known, unknown_runs = [], 0.0, 0
    for (variant, algo, where), group in cells.items():
        hours = per_run[algo]
        total = None if hours is None else hours * len(group)
        if total is None:
            unknown_runs += len(group)
        else:
            known += total
        rows.append([variant_folder(variant) if variant else "(default)", algo, where,
                     ",".join(str(j.seed) for j in group), len(group), _hours(hours),
                     _hours(total)])
    algos = list(dict.fromkeys(j.algo for j in jobs))
    lines = [f"Sweep of {len(jobs)} runs ({len(cells)} cells, {len(algos)} algorithms, preset "
             f"{request.preset}) into {root}:", ""]
    headers = ["grid point", "algorithm", "pair/target", "seeds", "runs", "GPU-h/run", "GPU-h"]
    if any(j.scale for j in jobs):  # a named grid's scale settings, per cell
        scales = [",".join(f"{k}={v}" for k, v in group[0].scale) or "-"
                  for group in cells.values()]
        rows = [[*row[:3], scale, *row[3:]] for row, scale in zip(rows, scales)]
        headers = [*headers[:3], "scale", *headers[3:]]
    lines.append(_table(rows, headers))
    lines += ["", f"Estimated GPU-hours: {known:,.0f}"
              + (f" + {unknown_runs} runs of unknown cost ("
                 + ", ".join(a for a in algos if per_run[a] is None) + ")"
                 if unknown_runs else "") + "."]
    lines.append("  From the paper's training-time table (results/paper/"
                 "table_training_efficiency.csv: training minutes of one run on one RTX 3090, "
                 "Meta-World HP->BT, the paper's iterations), at the paper preset; evaluation "
                 "and dataset generation are not counted.")
    if request.preset != "paper":
        lines.append(f"  This sweep's preset is {request.preset}: its runs are far shorter "
                     "than these paper-scale estimates.")
    if request.gpus_per_job > 1:
        lines.append(f"  Each job holds {request.gpus_per_job} GPUs: the allocation is "
                     f"{request.gpus_per_job}x these GPU-hours.")
    first = jobs[0]
    example = [word.replace(str(root.resolve()), str(root)) for word in
               run_command(request, first, root)]
    lines += ["", "Each job is one run command, e.g.:", "  " + display_command(example)]
    return "\n".join(lines)


# Manifest ----------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is corrupt ({e}); the run directories are intact: move it "
                         "away and re-run the sweep command to rebuild it.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("jobs"), dict):
        raise SweepError(f"{path} is not a sweep manifest; move it away and re-run the sweep.")
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    from coworld_bench.data.format import atomic_write_json

    manifest["updated"] = _now()
    atomic_write_json(Path(root) / MANIFEST, manifest)


def count_attempts(log: Path) -> int:
    if not log.exists():
        return 0
    with open(log, errors="replace") as f:
        return sum(line.startswith(ATTEMPT_HEADER) for line in f)


def _attempt_header(job_id: str, attempt: int, command: list[str], where: str) -> str:
    return (f"{ATTEMPT_HEADER} {attempt} of {job_id} at {_now()} on {platform.node()} "
            f"({where}): {display_command(command)}\n")


def last_error(log: Path) -> str:
    """The line of a failed job's log that says why (the CLI's one-line error, else
    the last line)."""
    if not log.exists():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(ATTEMPT_HEADER)]
    for line in reversed(lines):
        if line.startswith("coworld-bench: error:"):
            return line
    return lines[-1][:300] if lines else ""


# Executors ------------------------------------------------------------------------------------

def _gpu_devices() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no CUDA build: no GPUs
        return []


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``) -> whole minutes (rounded up)."""
    text = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise SweepError(f"--slurm-time {text!r} is not a SLURM time (e.g. 24:00:00, 2-00:00:00 "
                         "or 90 for minutes).")
    days, a, b, c = match.groups()
    a, b, c = int(a), (int(b) if b else None), (int(c) if c else None)
    if days is not None:
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        seconds = a * 3600 + b * 60 + c
    elif b is not None:
        seconds = a * 60 + b
    else:
        seconds = a * 60
    if seconds <= 0:
        raise SweepError(f"--slurm-time {text!r} is zero.")
    return math.ceil(seconds / 60)


def parse_mem_gb(text: str | None) -> float | None:
    """``64G``, ``64GB``, ``64000M``, ``1T`` or a number of GB -> GB."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(text).upper())
    if not match:
        raise SweepError(f"--slurm-mem {text!r} is not a size (e.g. 64G or 64000M).")
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "": 1.0, "T": 1024.0}[match.group(2)]
    return float(match.group(1)) * scale


def _child_signals_ignored() -> None:
    """In a cluster job, SLURM signals every process of the step; the run must stop
    only through its own SIGINT path (checkpoint, then exit), sent by ``RunJob``."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


try:  # submitit requeues a callable that has a ``checkpoint`` method
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # the local executor needs no submitit
    _Checkpointable = object


class RunJob(_Checkpointable):
    """A submitit job: one ``coworld-bench run`` command, its output appended to the
    job's log. Checkpointable: on preemption or timeout submitit calls ``checkpoint``,
    which stops the run through its SIGINT path (it writes its checkpoint and exits),
    then requeues this same command, which resumes the run."""

    def __init__(self, command: list[str], log: str, job_id: str, env: dict[str, str],
                 grace_s: float = 60.0):
        self.command = list(command)
        self.log = log
        self.job_id = job_id
        self.env = dict(env)
        self.grace_s = grace_s
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None
        return state

    def __call__(self) -> dict[str, Any]:
        log = Path(self.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        attempt = count_attempts(log) + 1
        env = {**os.environ, **self.env}
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?")
        with open(log, "a") as out:
            where = f"submitit job {job}, pid {os.getpid()}"
            out.write(_attempt_header(self.job_id, attempt, self.command, where))
            out.flush()
            self._process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, preexec_fn=_child_signals_ignored)
            # poll, not wait(): the preemption handler runs in this thread and must be
            # able to poll the process too (Popen.wait holds a lock a handler would block on).
            while self._process.poll() is None:
                time.sleep(0.5)
        return {"exit_status": self._process.returncode, "attempt": attempt}

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # the run: stop after this update, checkpoint
            deadline = time.monotonic() + self.grace_s
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if process.poll() is None:
                process.kill()  # it resumes from its last periodic checkpoint
        with open(self.log, "a") as out:
            out.write(f"=== coworld-bench sweep: preempted or timed out at {_now()}; the run "
                      "stopped at its checkpoint and the job is requeued (unless it timed out "
                      "--max-requeues times)\n")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


_ACTIVE_SUBMITIT = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING",
                    "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


def local_slots(request: SweepRequest, log=print) -> list[dict[str, str]]:
    """The local executor's worker slots: the environment each adds to its runs
    (``CUDA_VISIBLE_DEVICES``: its group of ``--gpus-per-job`` GPUs, several slots
    sharing a group when ``--jobs`` exceeds the groups; ``OMP_NUM_THREADS``: the cores
    divided among the slots unless set). Refuses the paper preset without a GPU."""
    devices = _gpu_devices()
    g = request.gpus_per_job
    if g == 0:
        devices = []
    groups = [devices[i:i + g] for i in range(0, len(devices) - g + 1, g)] if devices else []
    if devices and not groups:
        raise SweepError(f"--gpus-per-job {g} but this machine has {len(devices)} GPUs "
                         f"({','.join(devices)}).")
    if request.preset == "paper" and not groups and not request.yes:
        raise SweepError("No GPU here, and the paper preset takes days to weeks per run on a "
                         "CPU: add --preset quick, run the sweep on a cluster (--executor "
                         "slurm), or add --yes to start it here anyway.")
    n = request.jobs or len(groups) or 1
    if groups and n > len(groups):
        log(f"note: {n} workers share {len(groups)} GPU group(s) of {g}.")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    slots = []
    for k in range(n):
        env = {"OMP_NUM_THREADS": threads}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[k % len(groups)]) if groups else ""
        slots.append(env)
    if not groups and not _gpu_devices():
        for env in slots:  # nothing to hide
            del env["CUDA_VISIBLE_DEVICES"]
    return slots


class Sweep:
    """One sweep process: the manifest's only writer, and the scheduler of its jobs."""

    def __init__(self, request: SweepRequest, root: Path, jobs: list[Job],
                 datasets: dict[str, str | None] | None = None, log=print):
        self.request = request
        self.root = root
        self.jobs = {job.id: job for job in jobs}
        self.datasets = datasets or {}
        self.log = log
        self.stopping = 0
        self.manifest: dict[str, Any] = {}
        self.running: dict[str, Any] = {}  # job id -> Popen (local) or submitit job
        self.elsewhere: set[str] = set()  # locked by a process this sweep did not start
        self.slots: list[dict[str, str]] = []  # local executor: each worker's environment
        self.detached = False  # jobs left queued or running on the cluster
        self._lock = None

    # Manifest ---------------------------------------------------------------

    def entry(self, job_id: str) -> dict[str, Any]:
        return self.manifest["jobs"][job_id]

    def save(self) -> None:
        write_manifest(self.root, self.manifest)

    def record(self, job_id: str, **fields: Any) -> None:
        entry = self.entry(job_id)
        entry.update(fields)
        entry["attempts"] = count_attempts(self.root / entry["log"])
        self.save()

    def open(self) -> None:
        """Takes the sweep lock, merges the request into the manifest and refreshes
        every job of this request from its run directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            handle = locks.hold(self.root / SWEEP_LOCK)
        except locks.LockHeld as held:
            raise SweepError(f"{self.root} is being swept by {held.holder}; wait for it, or stop "
                             "it first (its runs resume). `coworld-bench sweep status "
                             f"{self.root}` shows its progress.") from None
        self._lock = handle
        manifest = read_manifest(self.root) or {"version": 1, "created": _now(), "requests": [],
                                                "jobs": {}}
        request = {**self.request.to_json(), "time": _now(), "argv": sys.argv[1:]}
        manifest["requests"].append(request)
        manifest["request"] = request
        self.manifest = manifest
        for job_id, job in self.jobs.items():
            command = run_command(self.request, job, self.root)
            old = manifest["jobs"].get(job_id)
            entry = {"id": job_id, "algo": job.algo, "pair": job.pair, "target": job.target,
                     "seed": job.seed, "variant": dict(job.variant), "scale": dict(job.scale),
                     "run_dir": job_id,
                     "log": f"{LOGS}/{job.log_name}", "command": command,
                     "state": "pending", "exit_status": None, "attempts": 0, "pid": None,
                     "executor": self.request.executor, "submitit_job_id": None,
                     "error": "", "started": None, "ended": None}
            if old:
                entry.update({k: old[k] for k in ("state", "exit_status", "started", "ended",
                                                  "error", "submitit_job_id", "executor")
                              if k in old})
                if old.get("command") != command:
                    entry["state"] = "pending"  # asked differently: the runner decides
            entry["attempts"] = count_attempts(self.root / entry["log"])
            entry["state"] = self.refresh_state(entry)
            manifest["jobs"][job_id] = entry
        self.save()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def refresh_state(self, entry: dict[str, Any]) -> str:
        from coworld_bench.status import is_locked

        run_dir = self.root / entry["run_dir"]
        # "running": a run whose process outlived a killed sweep and finished after it.
        if (run_dir / "result.json").exists() and entry["state"] in ("finished", "running"):
            return "finished"
        if is_locked(run_dir):
            return "running"
        return "pending"

    # Scheduling -------------------------------------------------------------

    def todo(self) -> list[str]:
        return [job_id for job_id in self.jobs if self.entry(job_id)["state"] != "finished"]

    def settle(self, job_id: str, exit_status: int | None, error: str = "") -> None:
        """A job's command ended: finished, failed, interrupted (pending again) or the
        run was locked by another process (running elsewhere: waited for)."""
        from coworld_bench.status import is_locked

        entry = self.entry(job_id)
        run_dir = self.root / entry["run_dir"]
        log = self.root / entry["log"]
        fields: dict[str, Any] = {"exit_status": exit_status, "ended": _now(), "pid": None}
        if exit_status == 0 and (run_dir / "result.json").exists():
            fields.update(state="finished", error="")
        elif exit_status == EXIT_USER_ERROR and is_locked(run_dir):
            fields.update(state="running", error="trained by another process; waited for")
            self.elsewhere.add(job_id)
        elif exit_status == EXIT_INTERRUPTED:  # stopped at its checkpoint (SIGINT)
            fields.update(state="pending", error="interrupted; resumes on the next sweep")
            if not self.stopping:
                self.log(f"interrupted: {job_id} (not restarted by this sweep)")
        else:
            fields.update(state="failed", error=error or last_error(log)
                          or f"exit status {exit_status}")
            self.log(f"failed: {job_id} (exit status {exit_status}): {fields['error']}\n"
                     f"  log: {log}")
        self.record(job_id, **fields)
        if fields["state"] == "finished":
            self.log(f"finished: {job_id}")

    def check_elsewhere(self) -> list[str]:
        """Runs another process was training: finished once its lock is gone, else
        to be started (resumed) by this sweep."""
        from coworld_bench.status import is_locked

        ready = []
        for job_id in sorted(self.elsewhere):
            run_dir = self.root / self.entry(job_id)["run_dir"]
            if is_locked(run_dir):
                continue
            self.elsewhere.discard(job_id)
            if (run_dir / "result.json").exists():
                self.record(job_id, state="finished", error="", ended=_now())
                self.log(f"finished (by another process): {job_id}")
            else:
                self.record(job_id, state="pending", error="")
                ready.append(job_id)
        return ready

    def next_ready(self, queue: list[str], limit: int) -> list[str]:
        """Up to ``limit`` jobs of ``queue`` to start now, taken out of it: a job whose
        target dataset is missing waits while a job of this sweep that needs the same
        dataset is running or chosen (that one makes it; two would collect into the
        same folder at once)."""
        making = {self.datasets.get(j) for j in self.running}
        chosen = []
        for job_id in list(queue):
            if len(chosen) >= limit:
                break
            dataset = self.datasets.get(job_id)
            if dataset is not None and not dataset_ready(dataset):
                if dataset in making:
                    continue
                making.add(dataset)
            queue.remove(job_id)
            chosen.append(job_id)
        return chosen

    def _handle_signal(self, signum, frame) -> None:
        self.stopping += 1
        if self.stopping == 1:
            self.log(f"\n{signal.Signals(signum).name}: stopping; the running jobs write their "
                     "checkpoints (again to stop them at once). Re-run the same sweep command to "
                     "go on.")

    def run(self) -> int:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous[sig] = signal.signal(sig, self._handle_signal)
            except ValueError:  # not the main thread
                pass
        try:
            if self.request.executor == "local":
                self.run_local()
            else:
                self.run_submitit()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.summary()

    def summary(self) -> int:
        entries = [self.entry(j) for j in self.jobs]
        counts = {s: sum(e["state"] == s for e in entries) for s in STATES}
        self.log(f"Sweep {self.root}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                 + f" of {len(entries)} jobs.")
        for e in entries:
            if e["state"] == "failed":
                self.log(f"  failed: {e['id']} (exit status {e['exit_status']}): {e['error']}\n"
                         f"    log: {self.root / e['log']}")
        if self.stopping:
            return EXIT_INTERRUPTED
        if counts["failed"] or (counts["pending"] and not self.detached):
            return 1
        return 0

    # Local executor ---------------------------------------------------------

    def _launch_local(self, job_id: str, slot: int, env_extra: dict[str, str]) -> None:
        entry = self.entry(job_id)
        log = self.root / entry["log"]
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "a")
        attempt = count_attempts(log) + 1
        devices = env_extra.get("CUDA_VISIBLE_DEVICES")
        where = f"worker {slot}" + (f", CUDA_VISIBLE_DEVICES={devices}" if devices else "")
        out.write(_attempt_header(job_id, attempt, entry["command"], where))
        out.flush()
        # Its own session: a Ctrl-C at the terminal reaches the sweep only, which passes
        # one SIGINT on to each run (a second one would stop a run before its checkpoint).
        process = subprocess.Popen(entry["command"], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env_extra}, start_new_session=True)
        out.close()
        process.slot = slot  # type: ignore[attr-defined]
        self.running[job_id] = process
        self.record(job_id, state="running", pid=process.pid, started=_now(), ended=None,
                    exit_status=None, error="")

    def run_local(self) -> None:
        from coworld_bench.status import is_locked

        slots = self.slots or local_slots(self.request, self.log)
        queue = self.todo()
        free = list(range(len(slots)))
        forwarded = 0
        poll = self.request.poll_s or 1.0
        self.log(f"Sweep {self.root}: {len(queue)} of {len(self.jobs)} jobs to run, "
                 f"{len(slots)} at a time.")
        for job_id in list(queue):
            if self.entry(job_id)["state"] == "running":  # locked at start: another process
                self.elsewhere.add(job_id)
                queue.remove(job_id)
        if self.elsewhere:
            self.log(f"waiting for {len(self.elsewhere)} run(s) trained by other processes: "
                     + ", ".join(sorted(self.elsewhere)))
        while queue or self.running or (self.elsewhere and not self.stopping):
            if self.stopping and forwarded < self.stopping:
                for process in self.running.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
                forwarded = self.stopping
                queue = []
            while queue and free and not self.stopping:
                ready = self.next_ready(queue, 1)
                if not ready:
                    break
                job_id = ready[0]
                if is_locked(self.root / self.entry(job_id)["run_dir"]):
                    self.elsewhere.add(job_id)
                    self.record(job_id, state="running", error="trained by another process")
                    continue
                slot = free.pop(0)
                self._launch_local(job_id, slot, slots[slot])
            for job_id, process in list(self.running.items()):
                if process.poll() is None:
                    continue
                del self.running[job_id]
                free.append(process.slot)
                free.sort()
                self.settle(job_id, process.returncode)
            if not self.stopping:
                queue += [j for j in self.check_elsewhere() if j not in queue]
            time.sleep(poll)

    # submitit executor (SLURM, or its local executor) -------------------------------

    def _executor(self):
        import submitit

        request = self.request
        cluster = "slurm" if request.executor == "slurm" else "local"
        folder = self.root / SUBMITIT_DIR
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                         **{f"{cluster}_max_num_timeout": request.max_requeues})
        params: dict[str, Any] = {"name": "coworld-sweep",
                                  "timeout_min": parse_slurm_time(request.slurm_time),
                                  "stderr_to_stdout": True}
        if request.cpus_per_job:
            params["cpus_per_task"] = request.cpus_per_job
        mem = parse_mem_gb(request.slurm_mem)
        if mem:
            params["mem_gb"] = mem
        if cluster == "slurm":
            if request.gpus_per_job:
                params["gpus_per_node"] = request.gpus_per_job
            params["slurm_array_parallelism"] = request.jobs or 256
            if request.slurm_partition:
                params["slurm_partition"] = request.slurm_partition
            if request.slurm_account:
                params["slurm_account"] = request.slurm_account
            if request.slurm_setup:
                params["slurm_setup"] = list(request.slurm_setup)
        elif _gpu_devices() and request.gpus_per_job:
            params["gpus_per_node"] = request.gpus_per_job
        executor.update_parameters(**params)
        return executor, cluster

    def _job_env(self) -> dict[str, str]:
        if os.environ.get("OMP_NUM_THREADS"):
            return {}
        if self.request.executor == "slurm":
            return {"OMP_NUM_THREADS": str(self.request.cpus_per_job)} \
                if self.request.cpus_per_job else {}
        n = self.request.jobs or 1
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}

    def _submit(self, executor, cluster: str, job_ids: list[str]) -> None:
        entries = [self.entry(j) for j in job_ids]
        env = self._job_env()
        calls = [RunJob(e["command"], str(self.root / e["log"]), e["id"], env) for e in entries]
        if cluster == "slurm" and len(calls) > 1:
            with executor.batch():
                handles = [executor.submit(call) for call in calls]
        else:
            handles = [executor.submit(call) for call in calls]
        for job_id, handle in zip(job_ids, handles):
            self.running[job_id] = handle
            self.record(job_id, state="pending" if cluster == "slurm" else "running",
                        submitit_job_id=str(handle.job_id), started=_now(), ended=None,
                        exit_status=None, error="", pid=None,
                        submitit_log=str(handle.paths.stdout))
        self.log(f"submitted {len(handles)} job(s) to submitit ({cluster}): "
                 + ", ".join(str(h.job_id) for h in handles[:8])
                 + (" ..." if len(handles) > 8 else ""))

    def _reattach(self, cluster: str, job_id: str):
        """A job this sweep (or a previous one) submitted to SLURM and that is still
        queued or running there: followed, not submitted again."""
        import submitit

        submitted = self.entry(job_id).get("submitit_job_id")
        if cluster != "slurm" or not submitted:
            return None
        handle = submitit.SlurmJob(folder=self.root / SUBMITIT_DIR, job_id=submitted)
        try:
            state = handle.get_info(mode="force").get("State", "UNKNOWN")
        except Exception:  # noqa: BLE001 - sacct unavailable: submit again (the lock guards)
            return None
        return handle if state.split()[0] in _ACTIVE_SUBMITIT else None

    def _outcome(self, handle) -> tuple[int | None, str]:
        try:
            result = handle.result()
        except Exception as e:  # noqa: BLE001 - the job died or was cancelled
            return None, f"submitit job {handle.job_id} ended without a result: " \
                         f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
        return int(result["exit_status"]), ""

    def run_submitit(self) -> None:
        from coworld_bench.status import is_locked

        executor, cluster = self._executor()
        poll = self.request.poll_s or (30.0 if cluster == "slurm" else 1.0)
        limit = None if cluster == "slurm" else (self.request.jobs or 1)
        queue = []
        for job_id in self.todo():
            handle = self._reattach(cluster, job_id)  # first: a requeued job holds no lock
            if handle is not None:
                self.running[job_id] = handle
            elif self.entry(job_id)["state"] == "running":  # locked by another process
                self.elsewhere.add(job_id)
            else:
                queue.append(job_id)
        self.log(f"Sweep {self.root}: {len(queue)} of {len(self.jobs)} jobs to submit "
                 f"({len(self.running)} still queued or running on the cluster).")
        while queue or self.running or (self.elsewhere and not self.stopping):
            if self.stopping:
                if cluster == "slurm":  # they go on there; the next sweep follows them
                    self.detached = True
                    self.log(f"{len(self.running)} job(s) stay queued or running on the "
                             "cluster; re-run the same sweep command to follow them.")
                else:
                    for job_id, handle in self.running.items():
                        handle.cancel(check=False)
                        self.record(job_id, state="pending", error="cancelled by the sweep")
                self.running.clear()
                return
            free = len(queue) if limit is None else max(0, limit - len(self.running))
            chosen = self.next_ready(queue, free) if queue and free else []
            ready = [j for j in chosen if not is_locked(self.root / self.entry(j)["run_dir"])]
            self.elsewhere.update(j for j in chosen if j not in ready)
            if ready:
                self._submit(executor, cluster, ready)
            for job_id, handle in list(self.running.items()):
                if cluster == "slurm" and self.entry(job_id)["state"] == "pending" and \
                        handle.state.startswith("RUNNING"):
                    self.record(job_id, state="running")
                if not handle.done():
                    continue
                del self.running[job_id]
                exit_status, error = self._outcome(handle)
                self.settle(job_id, exit_status, error)
            queue += [j for j in self.check_elsewhere() if j not in queue]
            if not self.request.wait and cluster == "slurm":
                self.detached = True
                held = f" {len(queue)} job(s) wait for a dataset a submitted job makes: " \
                       "re-run the command once it is made to submit them." if queue else ""
                self.log("Submitted; not waiting (--no-wait). Follow the jobs with "
                         f"`coworld-bench sweep status {self.root}`; re-running the same sweep "
                         f"command follows them and submits what failed.{held}")
                return
            time.sleep(poll)


def run_sweep(request: SweepRequest, jobs: list[Job] | None = None, log=print) -> int:
    """Runs (or resumes) a sweep; returns the exit status (0 all finished, 1 some
    failed, 130 interrupted)."""
    if request.executor not in EXECUTORS:
        raise SweepError(f"Unknown executor {request.executor!r}; valid executors: "
                         f"{', '.join(EXECUTORS)}.")
    if request.jobs is not None and request.jobs < 1:
        raise SweepError("--jobs must be at least 1.")
    if request.gpus_per_job < 0:
        raise SweepError("--gpus-per-job must be 0 or more.")
    root = Path(request.out)
    jobs = expand(request) if jobs is None else jobs
    datasets = check_settings(request, jobs, log=log)
    if request.executor != "local":
        parse_slurm_time(request.slurm_time)
        parse_mem_gb(request.slurm_mem)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SweepError("The cluster executor needs submitit: pip install 'submitit>=1.5'."
                             ) from None
        if request.executor == "slurm" and shutil.which("srun") is None:
            raise SweepError("--executor slurm: no SLURM here (srun is not on PATH); run the "
                             "sweep on the cluster's login node, or use --executor local.")
    sweep = Sweep(request, root, jobs, datasets, log=log)
    if request.executor == "local":
        sweep.slots = local_slots(request, log)
    sweep.open()
    try:
        return sweep.run()
    finally:
        sweep.close()


# Status -----------------------------------------------------------------------------------------

def status_rows(root: Path) -> tuple[list[list[str]], list[str], dict[str, int]]:
    """The manifest's jobs with their states refreshed from their run directories
    (result.json = finished, lock held = running), beside ``coworld-bench status``'s
    progress columns. Reads only: the sweep process is the manifest's only writer."""
    from coworld_bench.status import is_locked, run_states

    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise SweepError(f"{root} holds no sweep ({MANIFEST} is missing): give the --out folder "
                         "of a `coworld-bench sweep`.")
    states = {Path(s.path).resolve(): s for s in run_states(root)}
    rows, notes = [], []
    counts = {s: 0 for s in STATES}
    for entry in manifest["jobs"].values():
        run_dir = root / entry["run_dir"]
        run = states.get(run_dir.resolve())
        state = entry["state"]
        if run is not None and run.state == "finished":
            state = "finished"
        elif is_locked(run_dir):
            state = "running"
        elif state == "running":  # its process is gone: it resumes on the next sweep
            state = "pending"
        counts[state] += 1
        variant = ",".join(f"{k}={v}" for k, v in entry["variant"].items()) or "–"
        exit_status = "" if entry.get("exit_status") is None else str(entry["exit_status"])
        rows.append([entry["pair"] or entry["target"], entry["algo"], str(entry["seed"]),
                     variant, run.preset if run else "–", run.progress if run else "–",
                     run.last_eval if run else "–", state, exit_status,
                     str(count_attempts(root / entry["log"])), entry["log"]])
        if state == "failed":
            notes.append(f"  failed: {entry['id']}: {entry.get('error') or 'see its log'}\n"
                         f"    log: {root / entry['log']}")
        elif run is not None and run.why and state != "finished" and run.state == "broken":
            notes.append(f"  {entry['id']}: {run.why}")
    return rows, notes, counts


STATUS_HEADER = ["pair/target", "algorithm", "seed", "grid point", "preset", "step / total",
                 "last eval", "state", "exit", "attempts", "log"]


def status_text(root: Path) -> str:
    from coworld_bench.cli import _table

    rows, notes, counts = status_rows(root)
    total = sum(counts.values())
    lines = [_table(rows, STATUS_HEADER), "",
             f"{total} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + "."]
    lines += notes
    if counts["pending"] or counts["failed"]:
        lines.append("Re-run the sweep command to run the pending and failed jobs.")
    return "\n".join(lines)
