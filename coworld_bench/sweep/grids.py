"""What a sweep runs: the paper's named grids (blocks of algorithms on pairs with fixed
settings), the request of ``coworld-bench sweep``, and its expansion into jobs, each
one ``coworld-bench run`` command in a folder of its grid point."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable

from coworld_bench import tasks as tasks_lib
from coworld_bench.sweep.errors import SweepError

__all__ = ["Block", "NamedGrid", "NAMED_GRIDS", "Job", "SweepRequest", "expand", "parse_grid",
           "variant_folder", "job_overrides", "run_command", "display_command"]


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
    # study:zoo, the rest of the offline zoo at the same budget: CQL decays its std as
    # DrQ+BC does; LOMPO trains its model for half the updates (as Offline DV2 here) and
    # its agent for the other half; CURL and d3rlpy's entries have only a length.
    "cql": (("train_steps", STUDY_UPDATES), ("std_decay_updates", STUDY_UPDATES // 2)),
    "curl": (("train_steps", STUDY_UPDATES),),
    "lompo": (("model_updates", STUDY_UPDATES // 2), ("agent_updates", STUDY_UPDATES // 2)),
    "d3rlpy-iql": (("train_steps", STUDY_UPDATES),),
    "d3rlpy-cql": (("train_steps", STUDY_UPDATES),),
    "d3rlpy-bc": (("train_steps", STUDY_UPDATES),),
}
ZOO_STUDY = ("cql", "curl", "lompo", "d3rlpy-iql", "d3rlpy-cql", "d3rlpy-bc", "bc")
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
    grids.append(NamedGrid(
        "study:zoo", "The rest of the offline zoo on study:cpu's datasets and budget "
                     "(--preset quick, 3 seeds): CQL, CURL, LOMPO and d3rlpy's IQL, CQL and "
                     "BC on the Button Press and Drawer Close targets, 996 updates each, "
                     "beside BC (the same runs as study:cpu's)",
        tuple(Block(study, (algo,), ZOO_STUDY, scale=STUDY_SCALE[algo]) for algo in ZOO_STUDY),
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
    logger: str = "tensorboard"  # --logger of every run (not part of a run's identity)

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
    """The sweep's ``--set`` pairs, parsed as ``run`` parses them (a SweepError here)."""
    from coworld_bench.rundir import RunError, parse_overrides

    try:
        return parse_overrides(list(items or []))
    except RunError as e:
        raise SweepError(str(e)) from None


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
    if request.logger != "tensorboard":
        cmd += ["--logger", request.logger]
    return cmd


def display_command(command: list[str]) -> str:
    words = list(command)
    if words[:3] == [sys.executable, "-m", "coworld_bench.cli"]:
        words = ["coworld-bench", *words[3:]]
    return shlex.join(words)
