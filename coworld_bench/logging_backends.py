"""Where a run's scalars go: TensorBoard always, Weights & Biases on request.

The runner logs through one object, a ``RunLogger``: ``scalar(tag, value, step)`` for
every training and evaluation scalar, ``flush()`` before each checkpoint, and
``close(summary=..., failed=...)`` when the run ends. TensorBoard events
(``<run_dir>/tb/``) are written by every run; ``--logger wandb`` adds a wandb run that
gets the same tags at the same steps, the run's config, and the final result as its
summary. wandb is imported only then, so it stays an optional extra.

A resumed run continues its wandb run: the id is kept in ``<run_dir>/wandb_run_id``
and passed back with ``resume="allow"``, and wandb's files stay in
``<run_dir>/wandb/``. The runner redoes the updates between the checkpoint and the kill
and logs them again, with the same values. TensorBoard drops the old events of those
steps (``purge_step``). wandb cannot drop logged steps and refuses steps below the
resumed run's step, so the mirror leaves those steps out.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from coworld_bench.errors import UserError
from coworld_bench.rundir import atomic_write_bytes

__all__ = ["LOGGERS", "WANDB_ID_FILE", "WANDB_INSTALL", "RunLogger", "TensorBoardLogger",
           "WandbLogger", "check_logger", "import_wandb", "open_logger", "wandb_names"]

LOGGERS = ("tensorboard", "wandb")
WANDB_ID_FILE = "wandb_run_id"
WANDB_INSTALL = "pip install -e '.[wandb]'"


def import_wandb():
    """The wandb module, or a UserError that names the install command."""
    try:
        import wandb
    except ImportError as e:
        raise UserError(f"--logger wandb needs the wandb package, which cannot be imported "
                        f"({e}): install it with {WANDB_INSTALL} (or pip install wandb), or "
                        "leave --logger out for TensorBoard only.") from None
    return wandb


def check_logger(name: str) -> None:
    """Refuses an unknown logger, and wandb when it is not installed, before a run
    directory is made."""
    if name not in LOGGERS:
        raise UserError(f"Unknown logger {name!r}; valid loggers: {', '.join(LOGGERS)}.")
    if name == "wandb":
        import_wandb()


class TensorBoardLogger:
    """The run's TensorBoard events; events after ``purge_step`` (those of a killed
    session past its checkpoint) are hidden from readers, as the runner redoes them."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self, summary: dict[str, Any] | None = None, failed: bool = False) -> None:
        self._writer.close()


def wandb_names(run_dir: Path) -> tuple[str, str]:
    """(group, name) of a run directory ``<out>/<pair or target>/<algo>/seed<N>``: the
    seeds of a cell share the group ``pair/algo``, and a run is ``pair/algo/seedN``.
    Under a sweep's grid-point folder (``k=v``) the point comes first, so that runs of
    different points are not grouped together."""
    parts = Path(run_dir).resolve().parts
    cell = list(parts[-3:-1])
    if len(parts) >= 4 and "=" in parts[-4]:
        cell.insert(0, parts[-4])
    group = "/".join(cell)
    return group, f"{group}/{parts[-1]}"


class WandbLogger:
    """A wandb run mirroring the TensorBoard scalars, resumed by the id kept in the run
    directory. The project is ``$WANDB_PROJECT``, else ``coworld-bench``; the mode
    (online, offline) and the entity are wandb's own settings (``WANDB_MODE``, ...)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        wandb = import_wandb()
        run_dir = Path(run_dir)
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:
            run_id = secrets.token_hex(6)
            atomic_write_bytes(id_file, lambda f: f.write(run_id.encode()))
        group, name = wandb_names(run_dir)
        try:
            self._run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "coworld-bench",
                                   dir=str(run_dir), id=run_id, resume="allow", name=name,
                                   group=group)
        except wandb.errors.Error as e:
            raise UserError(f"wandb could not start the run's wandb run ({e}); log in with "
                            "`wandb login`, or log offline with WANDB_MODE=offline and "
                            "`wandb sync` later.") from None
        # A resumed session may record other versions, device or command: the newest wins.
        self._run.config.update(config, allow_val_change=True)
        # Steps below this one are already in the resumed wandb run.
        self._first_step = self._run.step

    @property
    def id(self) -> str:
        return self._run.id

    def scalar(self, tag: str, value: float, step: int) -> None:
        if step >= self._first_step:
            self._run.log({tag: value}, step=step)

    def flush(self) -> None:
        """Nothing to do: wandb's own process writes what is logged as it comes."""

    def close(self, summary: dict[str, Any] | None = None, failed: bool = False) -> None:
        if summary and not failed:
            self._run.summary.update(summary)
        self._run.finish(exit_code=1 if failed else 0)


class RunLogger:
    """TensorBoard and, when asked, a wandb mirror behind one interface: each scalar
    goes to every backend; closing closes all of them, even when one fails."""

    def __init__(self, backends: list):
        self.backends = backends

    def scalar(self, tag: str, value: float, step: int) -> None:
        for backend in self.backends:
            backend.scalar(tag, value, step)

    def flush(self) -> None:
        for backend in self.backends:
            backend.flush()

    def close(self, summary: dict[str, Any] | None = None, failed: bool = False) -> None:
        """Closes every backend; ``summary`` (the final result) goes to those that keep
        one. ``failed``: the run stopped on an error (wandb marks it failed), which a
        backend failing to close must not hide: its error is then only printed."""
        error = None
        for backend in self.backends:
            try:
                backend.close(summary=summary, failed=failed)
            except Exception as e:  # noqa: BLE001 - the others must close all the same
                if failed:
                    print(f"warning: closing the {type(backend).__name__} failed "
                          f"({type(e).__name__}: {e}).", file=sys.stderr)
                error = error or e
        if error is not None and not failed:
            raise error


def open_logger(kind: str, run_dir: Path, tb_dir: Path, *, purge_step: int | None = None,
                config: dict[str, Any] | None = None) -> RunLogger:
    """The run's logger: TensorBoard in ``tb_dir``, and with ``kind="wandb"`` a wandb
    run in ``run_dir`` with ``config``. wandb starts first, so that a missing or
    failing wandb leaves no TensorBoard writer open."""
    check_logger(kind)
    backends: list = []
    if kind == "wandb":
        backends.append(WandbLogger(run_dir, config or {}))
    try:
        backends.insert(0, TensorBoardLogger(tb_dir, purge_step=purge_step))
    except BaseException:
        for backend in backends:
            backend.close(failed=True)
        raise
    return RunLogger(backends)
