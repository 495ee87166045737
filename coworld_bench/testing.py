"""A conformance kit for algorithm authors: the checks every built-in algorithm passes.

``check_algorithm(MyAlgo)`` (inside a pytest test, or anywhere) runs them on an
``Algorithm`` subclass, registered or not, and raises one ``ConformanceError`` naming
every check that failed, what it found and what to change; it returns a
``ConformanceReport`` (checks passed and skipped, seconds per check, peak memory)
when all pass. The checks, by the id ``checks=`` takes:

- ``metadata``: what ``coworld-bench list algos``, ``list settings`` and the report
  read from the class: a documented ``TrainConfig`` dataclass, ``paper_name``,
  ``description``, a known ``family``, ``has_value`` with a ``value`` method,
  ``learns_from`` consistent with ``needs_source`` / ``needs_dataset``, a ``smoke``
  preset, valid configs at every preset.
- ``smoke-train``: the algorithm built through the runner's own path
  (``runner.prepare`` then ``Run.build``: a real dataset on disk, collected if missing,
  and real simulators) trains a few updates; every metric is a finite number or 0-d
  tensor.
- ``round-trip``: after those updates, ``state_dict()`` goes through ``torch.save`` and
  ``torch.load(weights_only=True)`` into a second instance built as a resumed run
  builds it (``Run.build``, which seeds torch with the run's seed); torch's and numpy's
  global generators are moved to another seed before it loads, then torch's is restored
  from the snapshot, as the runner restores it from a checkpoint. Its next update gives
  the same metrics and the same state as the first instance's next update.
- ``kill-resume``: a real ``coworld-bench run`` subprocess is killed with SIGKILL after
  its first checkpoint and run again; metrics.jsonl, the final returns of result.json
  and the final checkpoint equal an uninterrupted run's. (The subprocess stops itself
  right after that checkpoint and is killed there, so the kill lands mid-training
  however fast the algorithm trains.) The subprocess finds the algorithm through the
  ``coworld_bench.algorithms`` entry points, installed or under ``plugin_path``; a
  class only importable in this process skips this check, and the report (and a
  warning) says why.
- ``evaluation``: ``coworld_bench.evaluation.evaluate`` twice on the same seeds (one
  episode) gives the same returns; the value trace holds a finite critic value per
  step exactly when ``has_value``.
- ``memory``: memory growth over the build and the smoke updates (peak resident size,
  and malloc's bytes in use) stays under ``max_memory_mb``.

Each check runs at smoke size on a DeepMind Control target by default (Walker Walk,
or the Walker Walk -> Walker Downhill pair for algorithms with ``needs_source``): its
episodes cost a fifth of Meta-World's. Comparisons are exact, so the in-process checks
run on the CPU by default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from coworld_bench.algorithm import PRESETS, Algorithm, TrainConfig
from coworld_bench.registry import ENTRY_POINT_GROUP

__all__ = ["check_algorithm", "ConformanceError", "ConformanceReport", "ConformanceWarning",
           "Failure", "CHECKS", "FAMILIES", "DEFAULT_TARGET", "DEFAULT_PAIR"]

# Check ids (what ``checks=`` takes) and the titles their messages start with.
CHECKS = {
    "metadata": "metadata",
    "smoke-train": "smoke train",
    "round-trip": "checkpoint round trip",
    "kill-resume": "kill and resume",
    "evaluation": "deterministic evaluation",
    "memory": "memory ceiling",
}
# The families ``list algos`` shows and the report groups by (``is_ablation``).
FAMILIES = ("model-based", "model-free", "transfer", "ablation", "plugin")
DEFAULT_TARGET = "WW"
DEFAULT_PAIR = "WW-WD"
SUITES = ("metaworld", "robodesk", "dmc")
_STATE_FIX = ("state_dict() must hold every tensor, optimiser state and random generator the "
              "update reads (see coworld_bench.seeding.RandomStates), and load_state_dict() "
              "must put each of them back")
_RESUME_FIX = ("everything an update or the policy reads must come back from state_dict() "
               "(weights, optimiser states, random generators: "
               "coworld_bench.seeding.RandomStates) or from the run's own files "
               "(ctx.artifacts), never from what this process happened to do before")


@dataclasses.dataclass
class Failure:
    """One failed check: ``check`` (its id), what was found and what to change, and
    the exception that showed it (the ConformanceError's cause, traceback and all)."""

    check: str
    found: str
    fix: str
    cause: BaseException | None = dataclasses.field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{CHECKS[self.check]}: {self.found}; {self.fix}"


class ConformanceError(AssertionError):
    """The checks an algorithm failed (``failures``), one paragraph each; an
    AssertionError so that pytest shows it as a test failure, not an error."""

    def __init__(self, algo: str, failures: list[Failure], not_run: dict[str, str]):
        self.algo, self.failures, self.not_run = algo, failures, not_run
        lines = [str(f) for f in failures]
        if len(failures) > 1:
            lines = [f"{algo} fails {len(failures)} conformance checks:",
                     *(f"- {line}" for line in lines)]
        lines += [f"({CHECKS[c]} not run: {why})" for c, why in not_run.items()]
        super().__init__("\n".join(lines))

    @property
    def checks(self) -> list[str]:
        return [f.check for f in self.failures]


class ConformanceWarning(UserWarning):
    """A check the kit skipped, with the reason (also in the report)."""


@dataclasses.dataclass
class ConformanceReport:
    """What ``check_algorithm`` found for an algorithm that passed.

    Attributes:
      algo: the name it was checked under.
      task: the target or pair it ran on.
      passed: the checks it passed, in order.
      skipped: checks not run, with the reason.
      seconds: wall time of each check (the build is part of smoke-train).
      peak_memory_mb: memory growth over the build and the smoke updates (``memory``).
      memory_method: how that was measured.
      metrics: the last smoke update's metrics.
      run_dirs: the kill-resume check's run directories (``reference``, ``resumed``;
        removed after the call unless ``out`` was given).
    """

    algo: str
    task: str
    passed: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_memory_mb: float | None = None
    memory_method: str = ""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    run_dirs: dict[str, Path] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        timing = ", ".join(f"{c} {s:.1f} s" for c, s in self.seconds.items())
        memory = (f"; peak memory +{self.peak_memory_mb:.0f} MB"
                  if self.peak_memory_mb is not None else "")
        skipped = "".join(f"; skipped {c}: {why}" for c, why in self.skipped.items())
        return (f"{self.algo} on {self.task}: passed {', '.join(self.passed) or 'nothing'} "
                f"({timing}){memory}{skipped}")


def check_algorithm(cls: type[Algorithm], target: str | None = None, pair: str | None = None,
                    preset: str = "smoke", overrides: dict[str, Any] | None = None,
                    checks: Iterable[str] | None = None, data_root: str | Path | None = None,
                    plugin_path: str | Path | Sequence[str | Path] | None = None,
                    env: dict[str, str] | None = None, max_memory_mb: float = 2000.0,
                    updates: int = 3, seed: int = 0, device: str = "cpu",
                    out: str | Path | None = None, run_timeout_s: float = 600.0
                    ) -> ConformanceReport:
    """Runs the conformance checks (all, or the ids in ``checks``) on ``cls``; raises a
    ConformanceError naming each failed check, else returns the report.

    ``target`` / ``pair``: the task (default Walker Walk, or Walker Walk -> Walker
    Downhill for algorithms with ``needs_source``). ``preset`` and ``overrides`` (any
    setting, as ``--set`` takes it) make the config. ``data_root``: where datasets are
    found and made (default ``$COWORLD_BENCH_DATA``). ``plugin_path``: folders put on
    the kill-resume subprocess's PYTHONPATH (the plugin's module and its
    ``*.dist-info``), ``env``: more variables for it. ``updates``: smoke updates before
    the checkpoint round trip. ``out``: where run directories go (default a temporary
    folder, removed after); a finished uninterrupted run already there is reused."""
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"check_algorithm needs an Algorithm subclass, got {cls!r}.")
    selected = list(CHECKS) if checks is None else list(checks)
    unknown = [c for c in selected if c not in CHECKS]
    if unknown:
        raise ValueError(f"Unknown checks {', '.join(unknown)}; valid: {', '.join(CHECKS)}.")
    if updates < 1:
        raise ValueError(f"updates={updates}: at least one smoke update is needed.")
    paths = _paths(plugin_path)
    name, entry_point = _name_of(cls, paths)
    task = _task_args(cls, target, pair)
    report = ConformanceReport(algo=name, task=task.get("pair") or task["target"])
    kit = _Kit(cls, name, task, preset, dict(overrides or {}), data_root, seed, device,
               max_memory_mb, updates, report)
    failures: list[Failure] = []
    not_run: dict[str, str] = {}

    def record(check: str, seconds: float, problem: Failure | None) -> None:
        report.seconds[check] = seconds
        if problem is None:
            report.passed.append(check)
        else:
            failures.append(problem)

    with contextlib.ExitStack() as stack:
        root = Path(out) if out is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="coworld-conformance-")))
        kit.out = root
        stack.enter_context(_registered(cls, name))
        if "metadata" in selected:
            start = time.perf_counter()
            problem = _check_metadata(cls, name)
            record("metadata", time.perf_counter() - start, problem)
        in_process = [c for c in ("smoke-train", "memory", "round-trip", "evaluation")
                      if c in selected]
        if in_process:
            stack.enter_context(_global_state_kept())
            for check, seconds, problem in kit.run_in_process(in_process):
                if problem == "not run":
                    not_run[check] = "the smoke train failed"
                else:
                    record(check, seconds, problem)
        if "kill-resume" in selected:
            if entry_point is None:
                reason = (f"{cls.__module__}.{cls.__qualname__} is not an entry point of the "
                          f"group {ENTRY_POINT_GROUP} installed here or under plugin_path, so "
                          "a `coworld-bench run` subprocess cannot find it; install it (one "
                          "line in pyproject.toml) or pass plugin_path= folders holding its "
                          "module and its *.dist-info")
                report.skipped["kill-resume"] = reason
                warnings.warn(f"{name}: kill and resume skipped: {reason}.", ConformanceWarning,
                              stacklevel=2)
            else:
                start = time.perf_counter()
                try:
                    problem = kit.kill_and_resume(paths, dict(env or {}), run_timeout_s)
                except subprocess.TimeoutExpired as e:
                    problem = Failure("kill-resume", f"`{' '.join(e.cmd[2:])}` ran past "
                                      f"{run_timeout_s:g} s", "raise run_timeout_s, or make "
                                      "the smoke preset smaller")
                record("kill-resume", time.perf_counter() - start, problem)
    order = list(CHECKS)
    report.passed.sort(key=order.index)
    report.seconds = dict(sorted(report.seconds.items(), key=lambda kv: order.index(kv[0])))
    if failures:
        failures.sort(key=lambda f: order.index(f.check))
        cause = next((f.cause for f in failures if f.cause is not None), None)
        raise ConformanceError(name, failures, not_run) from cause
    return report


# Which name, which task ---------------------------------------------------------------

def _paths(plugin_path) -> list[Path]:
    if plugin_path is None:
        return []
    if isinstance(plugin_path, (str, Path)):
        return [Path(plugin_path)]
    return [Path(p) for p in plugin_path]


def _entry_points(paths: list[Path]) -> list[metadata.EntryPoint]:
    """The group's entry points installed here, then those of the distributions under
    ``paths``."""
    found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    for dist in metadata.distributions(path=[str(p) for p in paths]):
        found += [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    return found


def _name_of(cls: type[Algorithm], paths: list[Path]) -> tuple[str, str | None]:
    """The name the class is checked under, and the entry point (if any) through which
    a subprocess finds it: its own registered name, else the entry point naming it,
    else a name made from the class name (in-process only)."""
    own = cls.__dict__.get("name") or None  # a subclass inherits its parent's name
    for ep in _entry_points(paths):
        module, _, attr = ep.value.partition(":")
        if module != cls.__module__:
            continue
        if attr:
            obj = getattr(sys.modules.get(module), attr, None)
            if attr == cls.__qualname__ or obj is cls:
                return ep.name, ep.value
        elif own == ep.name:  # the module registers the class when imported
            return ep.name, ep.value
    if own is not None:
        return own, None
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", cls.__name__).lower().replace("_", "-")
    return base, None


@contextlib.contextmanager
def _registered(cls: type[Algorithm], name: str):
    """``registry.get(name)`` gives ``cls`` inside (the runner finds algorithms by
    name); the registry and the class's ``name`` are as they were after."""
    from coworld_bench import registry

    try:
        present = registry.get(name) is cls
    except Exception:  # noqa: BLE001 - unknown, or an entry point that fails to load
        present = False
    if present:
        yield
        return
    with registry.registered_for_a_while(cls, name):
        yield


def _task_args(cls: type[Algorithm], target: str | None, pair: str | None) -> dict[str, str]:
    from coworld_bench import tasks as tasks_lib

    if cls.needs_source:
        if pair is None and target is not None:
            raise ValueError(f"{cls.__name__} trains with an online source: give pair=... "
                             "(SOURCE-TARGET), not target=.")
        return {"pair": pair or DEFAULT_PAIR}
    if target is None and pair is not None:
        target = tasks_lib.resolve_pair(pair).target.id
    return {"target": target or DEFAULT_TARGET}


# Check 1: metadata ----------------------------------------------------------------------

def _check_metadata(cls: type[Algorithm], name: str) -> Failure | None:
    """What ``list algos``, ``list settings`` and the report read from the class."""
    from coworld_bench.algorithm import check_config_class, field_docs

    found: list[str] = []

    def problem(what: str, fix: str) -> None:
        found.append(f"{what}: {fix}")

    config_cls = cls.Config
    if not (isinstance(config_cls, type) and issubclass(config_cls, TrainConfig)
            and dataclasses.is_dataclass(config_cls)):
        problem(f"Config is {config_cls!r}, not a TrainConfig dataclass",
                "set Config to a @dataclasses.dataclass subclass of TrainConfig")
    else:
        if config_cls is TrainConfig:
            problem("Config is TrainConfig itself",
                    "give the algorithm its own TrainConfig subclass with its settings")
        try:
            check_config_class(config_cls, name)
        except TypeError as e:
            problem(str(e).rstrip("."), "make Config's checks and docstring speak of its "
                    "fields only")
        undocumented = [f.name for f in dataclasses.fields(config_cls)
                        if f.name not in field_docs(config_cls)]
        if undocumented:
            problem(f"{config_cls.__name__}'s docstring gives no meaning for "
                    f"{', '.join(undocumented)}", "document each setting under 'Attributes:' "
                    "in the config's docstring, as `  name: meaning.` (`coworld-bench list "
                    "settings` prints it)")
        for preset in PRESETS:
            try:
                cls.make_config(preset)
            except Exception as e:  # noqa: BLE001 - a message for the author
                problem(f"the {preset} preset does not make a valid config ({type(e).__name__}: "
                        f"{e})", f"make presets[{preset!r}] name only Config fields with "
                        "values in their ranges")
    if "smoke" not in cls.presets:
        problem("presets has no 'smoke' entry",
                "add presets = {'smoke': {...}} with the smallest model that exercises every "
                "part of the update (an empty dict if the defaults are already tiny): tests "
                "and this kit train at that preset")
    stray = sorted(set(cls.presets) - set(PRESETS))
    if stray:
        problem(f"presets names {', '.join(stray)}", f"presets take {', '.join(PRESETS)} only")
    stray = sorted(set(cls.paper) - set(SUITES))
    if stray:
        problem(f"paper names the suites {', '.join(stray)}",
                f"paper's keys are suites: {', '.join(SUITES)}")
    if not cls.paper_name.strip():
        problem("paper_name is empty", "set paper_name to the algorithm's name in result "
                "tables, which the report shows instead of the registry name")
    if not cls.description.strip():
        problem("description is empty", "set description to one line on what it is, for "
                "`coworld-bench list algos`")
    if cls.family not in FAMILIES:
        problem(f"family is {cls.family!r}", f"set family to one of {', '.join(FAMILIES)}")
    if not isinstance(cls.has_value, bool):
        problem(f"has_value is {cls.has_value!r}", "set has_value to True or False")
    elif cls.has_value and cls.value is Algorithm.value:
        problem("has_value is True but value() is the base class's (None)",
                "implement value(obs, state) returning the critic's value, or set has_value "
                "= False")
    for method in ("train_step", "policy", "state_dict", "load_state_dict"):
        if getattr(cls, method) is getattr(Algorithm, method):
            problem(f"{method}() is not implemented", f"implement {method}()")
    learns = cls.learns_from_text().lower()
    if cls.needs_source and "source" not in learns:
        problem(f"needs_source is True but learns_from says {cls.learns_from_text()!r}",
                "say that it learns from an online source in learns_from")
    if cls.family == "transfer" and "source" not in learns:
        problem(f"family is 'transfer' but learns_from says {cls.learns_from_text()!r}",
                "name its source in learns_from, or choose another family")
    if "source" in learns and not (cls.needs_source or cls.family == "transfer"):
        problem(f"learns_from names a source ({cls.learns_from_text()!r}) but needs_source is "
                "False",
                "set needs_source = True (the runner then gives ctx.make_source_env), or "
                "family = 'transfer' if it makes its sources itself")
    if cls.needs_dataset != ("offline" in learns):
        problem(f"needs_dataset is {cls.needs_dataset} but learns_from says "
                f"{cls.learns_from_text()!r}",
                "say 'offline target' in learns_from exactly when it trains on the offline "
                "dataset (needs_dataset)")
    if not found:
        return None
    return Failure("metadata", "; ".join(found), "`coworld-bench list algos`, `list settings` "
                   "and the report read these from the class")


# Checks 2, 3, 5, 6: in this process -------------------------------------------------------

@contextlib.contextmanager
def _global_state_kept():
    """The caller's random generators and torch's determinism settings are as they
    were after the checks (``Run.build`` seeds and sets them, as for a run)."""
    import torch

    numpy_state, python_state = np.random.get_state(), random.getstate()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


class _PeakMemory:
    """Memory growth over a block, in MB: the larger of the peak resident size's growth
    and the growth of the bytes malloc has handed out and not had back.

    The first: on Linux the kernel's high-water mark is reset to the current size at
    the start (``/proc/self/clear_refs``), so it is this block's alone; elsewhere the
    process's peak from ``getrusage``, which misses growth below an earlier peak. It
    also misses blocks served from freed memory the process still holds (the runner
    keeps up to 2 GiB of it, ``host.keep_freed_memory``), hence the second (glibc's
    ``mallinfo2``): what the block still holds at its end, however it was served."""

    def __enter__(self):
        self.methods = []
        self.hwm_before = self.heap_before = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.hwm_before = _proc_status_mb("VmRSS")
            self.methods.append("peak RSS (VmHWM after clear_refs)")
        except OSError:
            self.hwm_before = _rusage_peak_mb()
            self.methods.append("peak RSS (getrusage, a lower bound)")
        self.heap_before = _malloc_in_use_mb()
        if self.heap_before is not None:
            self.methods.append("malloc in use (mallinfo2)")
        return self

    def __exit__(self, *exc):
        if self.methods[0].startswith("peak RSS (VmHWM"):
            peak = _proc_status_mb("VmHWM")
        else:
            peak = _rusage_peak_mb()
        growth = peak - self.hwm_before
        if self.heap_before is not None:
            growth = max(growth, _malloc_in_use_mb() - self.heap_before)
        self.growth_mb = max(0.0, growth)
        self.method = " and ".join(self.methods)


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")


def _rusage_peak_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, kB here


def _malloc_in_use_mb() -> float | None:
    """Bytes glibc's malloc has handed out (heap and mmap'd blocks), or None elsewhere."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):  # not glibc, or glibc before 2.33
        return None
    return (info.uordblks + info.hblkhd) / 2**20


def _metric_problem(metrics: Any, step: int) -> str | None:
    """Why an update's return is not a dict of finite scalars, or None."""
    import torch

    if not isinstance(metrics, dict):
        return f"update {step} returned {type(metrics).__name__}, not a dict"
    for key, value in metrics.items():
        if not isinstance(key, str):
            return f"update {step} returned the key {key!r}, not a string"
        if torch.is_tensor(value):
            if value.dim() != 0:
                return f"update {step} returned {key} as a tensor of shape {tuple(value.shape)}"
            number = float(value.detach().float())
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool):
            number = float(value)
        else:
            return f"update {step} returned {key}={value!r} ({type(value).__name__})"
        if not math.isfinite(number):
            return f"update {step} returned {key}={number}"
    return None


def _scalars(metrics: dict) -> dict[str, float]:
    import torch

    return {k: float(v.detach().float()) if torch.is_tensor(v) else float(v)
            for k, v in metrics.items()}


def _saved(state: Any) -> tuple[Any, str | None]:
    """``state`` through torch.save and torch.load(weights_only=True) (a checkpoint's
    path), and the error if it does not make it."""
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True), None
    except Exception as e:  # noqa: BLE001 - reported with the fix
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where two loaded state trees first differ (exact equality; NaN equals NaN)."""
    import torch

    if torch.is_tensor(a) or torch.is_tensor(b):
        if not (torch.is_tensor(a) and torch.is_tensor(b)):
            return f"{path or 'the state'} is a tensor in one and {type(a).__name__} in the other"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{path} is {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if not torch.equal(a, b) and not (a.is_floating_point() and torch.equal(
                torch.nan_to_num(a, nan=1.5e-38), torch.nan_to_num(b, nan=1.5e-38))):
            return f"{path} differs"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            only = sorted(map(str, set(a) ^ set(b)))[:5]
            return f"{path or 'the state'} has different keys ({', '.join(only)})"
        for key in a:
            found = _first_difference(a[key], b[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path} has {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
    return None if same else f"{path} is {a!r} vs {b!r}"


def _short(metrics: dict[str, float], keys: list[str] | None = None) -> str:
    keys = keys or list(metrics)[:4]
    return "{" + ", ".join(f"{k!r}: {metrics[k]:.6g}" for k in keys if k in metrics) + \
        (", ..." if len(metrics) > len(keys) else "") + "}"


class _Kit:
    """The state one ``check_algorithm`` call shares between its checks."""

    def __init__(self, cls, name, task, preset, overrides, data_root, seed, device,
                 max_memory_mb, updates, report):
        self.cls, self.name, self.task, self.preset = cls, name, task, preset
        self.overrides, self.seed, self.device = overrides, seed, device
        self.data_root = str(data_root) if data_root is not None else None
        self.max_memory_mb, self.updates, self.report = max_memory_mb, updates, report
        self.out: Path | None = None

    def prepare(self, out: Path):
        from coworld_bench.runner import RunRequest, prepare

        return prepare(RunRequest(algo=self.name, preset=self.preset, overrides=self.overrides,
                                  seed=self.seed, device=self.device, out=str(out),
                                  progress=False, data_root=self.data_root, **self.task))

    def build(self, run):
        """The algorithm and evaluation env of ``run``, by the runner's own path (its
        dataset collected first if missing)."""
        from coworld_bench.data import Dataset, collect

        if run.collect_config is not None:
            collect(run.collect_config, run.dataset_directory, progress=False)
            run.collect_config = None
        dataset = Dataset(run.dataset_directory) if run.dataset_directory else None
        return run.build(dataset)

    def run_in_process(self, selected: list[str]):
        """Yields (check, seconds, Failure | None | "not run") for the selected
        in-process checks: smoke-train and memory over the first instance's build and
        updates, evaluation on it, round-trip into a second instance."""
        import torch

        start = time.perf_counter()
        algo = env = None
        problem = None
        try:
            with _PeakMemory() as memory:
                run = self.prepare(self.out / "in-process")
                algo, env = self.build(run)
                for step in range(self.updates):
                    metrics = algo.train_step(step)
                    problem = _metric_problem(metrics, step)
                    if problem:
                        break
        except Exception as e:  # noqa: BLE001 - the author's bug, reported with the fix
            _close(algo, env)
            yield "smoke-train", time.perf_counter() - start, Failure(
                "smoke-train", f"building and training raised {type(e).__name__}: {e}",
                "the algorithm must build from the RunContext the runner gives and train at "
                f"the {self.preset} preset (its traceback is this error's cause)", cause=e)
            for check in selected:
                if check != "smoke-train":
                    yield check, 0.0, "not run"
            return
        seconds = time.perf_counter() - start
        self.report.metrics = {} if problem else _scalars(metrics)
        self.report.peak_memory_mb = memory.growth_mb
        self.report.memory_method = memory.method
        try:
            if "smoke-train" in selected:
                yield "smoke-train", seconds, problem and Failure(
                    "smoke-train", problem, "train_step must return a dict of named finite "
                    "scalars (Python numbers or 0-d tensors) that the runner logs")
            if "memory" in selected:
                over = memory.growth_mb > self.max_memory_mb
                yield "memory", 0.0, over and Failure(
                    "memory", f"memory grew by {memory.growth_mb:.0f} MB over the build and "
                    f"{self.updates} smoke updates ({memory.method}), above the ceiling of "
                    f"{self.max_memory_mb:g} MB", "keep buffers to what an update needs "
                    "(smoke presets are small), free what is no longer used, or raise "
                    "max_memory_mb if the growth is expected") or None
            if problem:
                for check in ("round-trip", "evaluation"):
                    if check in selected:
                        yield check, 0.0, "not run"
                return
            if "round-trip" in selected:  # the instance's next update, from a snapshot
                try:
                    snapshot = _saved({"algorithm": algo.state_dict(),
                                       "torch_rng": torch.get_rng_state()})
                    after = algo.train_step(self.updates)
                    after_state = _saved(algo.state_dict())[0]
                except Exception as e:  # noqa: BLE001
                    selected = [c for c in selected if c != "round-trip"]
                    yield "round-trip", 0.0, Failure(
                        "round-trip", f"state_dict() or the update after it raised "
                        f"{type(e).__name__}: {e}", "state_dict() may be called between any "
                        "two updates (its traceback is this error's cause)", cause=e)
            if "evaluation" in selected:
                begin = time.perf_counter()
                problem = self.check_evaluation(algo, env, run)
                yield "evaluation", time.perf_counter() - begin, problem
        finally:
            _close(algo, env)
        if "round-trip" in selected:
            begin = time.perf_counter()
            problem = self.check_round_trip(run, snapshot, after, after_state)
            yield "round-trip", time.perf_counter() - begin, problem

    def check_round_trip(self, run, snapshot, after, after_state) -> Failure | None:
        import torch

        loaded, error = snapshot
        if error is not None:
            return Failure("round-trip", f"torch.load(weights_only=True) cannot read "
                           f"state_dict() after torch.save ({error})",
                           "state_dict() must hold tensors and plain values only (numbers, "
                           "strings, lists, dicts; numpy arrays as torch tensors): checkpoints "
                           "are loaded with weights_only=True")
        fresh = env = None
        try:
            fresh, env = self.build(run)
            # Another seed for the global generators: only torch's comes back from a
            # checkpoint (as in the runner's resume), numpy's must not be read.
            torch.manual_seed(self.seed + 7919)
            np.random.seed((self.seed + 7919) % 2**32)
            fresh.load_state_dict(loaded["algorithm"])
            torch.set_rng_state(loaded["torch_rng"])
            again = fresh.train_step(self.updates)
            again_state = _saved(fresh.state_dict())[0]
        except Exception as e:  # noqa: BLE001
            return Failure("round-trip", f"a fresh instance loading state_dict() raised "
                           f"{type(e).__name__}: {e}", "load_state_dict() must accept what "
                           "state_dict() gave, after torch.load(weights_only=True)", cause=e)
        finally:
            _close(fresh, env)
        a, b = _scalars(again), _scalars(after)
        differ = sorted(k for k in set(a) | set(b) if k not in a or k not in b
                        or not (a[k] == b[k] or math.isnan(a[k]) and math.isnan(b[k])))
        if differ:
            return Failure("round-trip", f"after load_state_dict the next train_step returned "
                           f"{_short(a, differ[:3])} instead of {_short(b, differ[:3])}",
                           _STATE_FIX)
        where = _first_difference(again_state, after_state, "state_dict()")
        if where:
            return Failure("round-trip", f"after load_state_dict and one more update, {where} "
                           "from the uninterrupted instance's", _STATE_FIX)
        return None

    def check_evaluation(self, algo, env, run) -> Failure | None:
        from coworld_bench.evaluation import evaluate

        try:
            first = evaluate(algo, env, 1, self.seed, 1, record_values=True,
                             discount=run.config.discount)
            second = evaluate(algo, env, 1, self.seed, 1)
        except Exception as e:  # noqa: BLE001
            return Failure("evaluation", f"an evaluation episode raised {type(e).__name__}: {e}",
                           "policy(obs, state, deterministic) must return (action, state) "
                           "for the runner's observations", cause=e)
        if first["returns"] != second["returns"]:
            return Failure("evaluation", f"two evaluations on the same seeds returned "
                           f"{first['returns']} and {second['returns']}",
                           "the deterministic policy may draw random numbers only from "
                           "torch's global generator (evaluation gives each episode its own "
                           "torch random state), never from numpy's or Python's global ones "
                           "or an unseeded generator of its own, and it keeps per-episode "
                           "memory in `state` (initial_state()), not on the algorithm")
        values = first["trace"]["value"]
        steps = run.target.episode_steps
        if values.shape != (1, steps):
            return Failure("evaluation", f"the value trace has shape {values.shape}, not "
                           f"(1, {steps})", "value() is called once per step of the episode")
        finite = np.isfinite(values)
        if self.cls.has_value and not finite.all():
            step = int(np.argmin(finite[0]))
            return Failure("evaluation", f"has_value is True but value() gave "
                           f"{values[0, step]} at step {step}", "value(obs, state) must "
                           "return the critic's finite value of every visited state")
        if not self.cls.has_value and finite.any():
            return Failure("evaluation", "value() returns values but has_value is False",
                           "set has_value = True so that the report's value-estimation "
                           "figure covers it")
        return None

    # Check 4: kill and resume ---------------------------------------------------------

    def command(self, out: Path, overrides: dict[str, Any], stop_after_checkpoint: bool = False
                ) -> list[str]:
        """``coworld-bench run`` of this algorithm into ``out``; ``stop_after_checkpoint``:
        through ``python -m coworld_bench.testing`` (see ``_stop_after_first_checkpoint``)."""
        args = ["run", "--algo", self.name, "--preset", self.preset, "--seed", str(self.seed),
                "--device", self.device, "--quiet", "--out", str(out)]
        for key, value in self.task.items():
            args += [f"--{key}", value]
        for key, value in overrides.items():
            args += ["--set", f"{key}={_setting_text(value)}"]
        module = "coworld_bench.testing" if stop_after_checkpoint else "coworld_bench.cli"
        return [sys.executable, "-m", module, *args]

    def run_overrides(self) -> dict[str, Any]:
        """The overrides, plus: one evaluation (at the end), and a checkpoint before the
        last update."""
        run = self.prepare(self.out / "in-process")
        extra: dict[str, Any] = {}
        if "eval_every" not in self.overrides:
            extra["eval_every"] = 0
        if run.config.checkpoint_every >= run.config.train_steps:
            extra["checkpoint_every"] = max(1, run.config.train_steps // 2)
        return {**self.overrides, **extra}

    def kill_and_resume(self, paths: list[Path], env_extra: dict[str, str],
                        timeout: float) -> Failure | None:
        """An uninterrupted run, and a run killed after its first checkpoint then run
        again, in subprocesses with ``paths`` on their PYTHONPATH: the same numbers."""
        import torch

        env = {**os.environ, **env_extra}
        if self.data_root is not None:
            env["COWORLD_BENCH_DATA"] = self.data_root
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(
                [*map(str, paths), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        reference_out, resumed_out = self.out / "reference", self.out / "resumed"
        relative = self.prepare(resumed_out).dir.relative_to(resumed_out)
        reference, resumed = reference_out / relative, resumed_out / relative
        self.report.run_dirs = {"reference": reference, "resumed": resumed}
        shutil.rmtree(resumed, ignore_errors=True)
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        def failed(what: str, result) -> Failure:
            tail = (result.stderr or "")[-2500:].strip()
            return Failure("kill-resume", f"{what} exited with status {result.returncode}: "
                           f"{tail}", "the algorithm must run through `coworld-bench run` as a "
                           "user runs it: is it an entry point where the subprocess looks "
                           "(plugin_path=)?")

        overrides = self.run_overrides()

        def plain(out: Path):
            return subprocess.run(self.command(out, overrides), capture_output=True, text=True,
                                  env=env, timeout=timeout)

        result = plain(reference_out)
        if result.returncode != 0:
            return failed("the uninterrupted run", result)
        # The run stops itself (SIGSTOP) right after its first checkpoint before the last
        # update, and is killed there: the kill lands mid-training however fast it trains.
        with open(logs / f"{self.name}-killed.out", "w") as stdout, \
                open(logs / f"{self.name}-killed.err", "w+") as stderr:
            proc = subprocess.Popen(self.command(resumed_out, overrides,
                                                 stop_after_checkpoint=True),
                                    stdout=stdout, stderr=stderr, env=env,
                                    start_new_session=True)
            try:
                waited, status = _wait_stopped(proc.pid, timeout)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if waited and not os.WIFSTOPPED(status):  # it ended, and waitpid reaped it
                proc.returncode = os.waitstatus_to_exitcode(status)
                stderr.seek(0)
                return Failure("kill-resume", "the run to be killed ended (exit status "
                               f"{os.waitstatus_to_exitcode(status)}) before writing a "
                               "checkpoint before its last update: "
                               f"{stderr.read()[-2000:].strip()}", "checkpoint_every must be "
                               "below train_steps at this preset")
            proc.wait()
            if not waited:
                return Failure("kill-resume", f"the run to be killed wrote no checkpoint in "
                               f"{timeout:g} s", "raise run_timeout_s, or make the smoke "
                               "preset smaller")
        killed_at = int(torch.load(resumed / "checkpoint" / "latest.pt",
                                   weights_only=True)["step"])
        result = plain(resumed_out)
        if result.returncode != 0:
            return failed(f"the re-run after a SIGKILL at update {killed_at}", result)
        if f"from step {killed_at}" not in result.stdout:
            return Failure("kill-resume", f"the re-run after a SIGKILL at update {killed_at} did "
                           f"not resume from it: {result.stdout[-1000:].strip()} "
                           f"{result.stderr[-1000:].strip()}", "the checkpoint must load "
                           "(torch.load(weights_only=True), then load_state_dict())")
        after = f"after a SIGKILL at update {killed_at} and a re-run"
        ours, theirs = _metrics(resumed), _metrics(reference)
        for line, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:3]
                return Failure("kill-resume", f"{after}, metrics.jsonl line {line + 1} (step "
                               f"{b.get('step')}) reads {_pick(a, keys)} instead of the "
                               f"uninterrupted run's {_pick(b, keys)}", _RESUME_FIX)
        if len(ours) != len(theirs):
            return Failure("kill-resume", f"{after}, metrics.jsonl has {len(ours)} lines, the "
                           f"uninterrupted run's {len(theirs)}", _RESUME_FIX)
        a, b = (json.loads((d / "result.json").read_text())["final"]["returns"]
                for d in (resumed, reference))
        if a != b:
            return Failure("kill-resume", f"{after}, the final evaluation returned {a} instead "
                           f"of the uninterrupted run's {b}", _RESUME_FIX)
        a, b = (torch.load(d / "checkpoint" / "latest.pt", weights_only=True)
                for d in (resumed, reference))
        where = _first_difference(a["algorithm"], b["algorithm"], "state_dict()")
        if where or a["step"] != b["step"]:
            where = where or f"the step is {a['step']} vs {b['step']}"
            return Failure("kill-resume", f"{after}, in the final checkpoint {where} from the "
                           "uninterrupted run's", _RESUME_FIX)
        return None


def _close(algo, env) -> None:
    if algo is not None:
        algo.close()
    if env is not None:
        env.close()


def _setting_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _wait_stopped(pid: int, timeout: float) -> tuple[int, int]:
    """Waits until the child stops or ends (``waitpid`` with WUNTRACED), at most
    ``timeout`` seconds; the status is 0 on a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if waited:
            return waited, status
        time.sleep(0.02)
    return 0, 0


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _pick(record: dict, keys: list[str]) -> str:
    return "{" + ", ".join(f"{k!r}: {record.get(k)!r}" for k in keys) + "}"


def _stop_after_first_checkpoint(argv: list[str]) -> int:
    """``coworld-bench`` with ``argv``, stopping itself (SIGSTOP) right after the first
    checkpoint it writes before the run's last update: the kill-resume check kills it
    there."""
    from coworld_bench import cli, runner

    write = runner.Run._checkpoint

    def checkpoint_then_stop(self, algo, step, elapsed):
        write(self, algo, step, elapsed)
        if step < self.config.train_steps:
            os.kill(os.getpid(), signal.SIGSTOP)

    runner.Run._checkpoint = checkpoint_then_stop
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(_stop_after_first_checkpoint(sys.argv[1:]))
