"""What a sweep checks before it starts anything: every job's settings resolved as the
runner will, runs it would resume made with the same settings, and which datasets exist."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from coworld_bench import tasks as tasks_lib
from coworld_bench.errors import UserError
from coworld_bench.rundir import CONFIG_FILE
from coworld_bench.sweep.errors import SweepError
from coworld_bench.sweep.grids import Job, SweepRequest, job_overrides

__all__ = ["check_settings", "check_existing_runs", "dataset_ready"]


def check_settings(request: SweepRequest, jobs: list[Job], log=print) -> dict[str, str | None]:
    """Every distinct algorithm x settings x task of the sweep resolved as the runner
    will (presets, ``--set`` types and ranges, per-task resolution) before anything
    starts. Algorithms that fail to import are reported, not fatal (their jobs fail
    with the error in their logs). Returns each job's target dataset directory (None:
    unknown or none), which the scheduler uses to let one run make a missing dataset
    while the others that need it wait."""
    from coworld_bench import logging_backends, registry, runner
    from coworld_bench.algorithm import PRESETS

    if request.preset not in PRESETS:
        raise SweepError(f"Unknown preset {request.preset!r}; valid presets: {', '.join(PRESETS)}.")
    logging_backends.check_logger(request.logger)  # wandb missing: said once, not per job
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
        if not (root / job.id / CONFIG_FILE).exists():
            continue
        # The logger is left at its default: where scalars are logged is no part of a
        # run's identity, so a re-run may add or drop --logger wandb.
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
