"""The benchmark's tasks and source->target pairs (SPEC section 2).

Every task has a full id (``mw-door-close``), a short code as the paper writes it
(``DC*``) and optional shell-friendly aliases (``DCS``). A pair ``S-T`` means the
online source ``S`` and the offline target ``T``; codes contain no ``-``, so a pair
splits at its one dash.
"""

from __future__ import annotations

import dataclasses
import difflib

from coworld_bench.errors import UserError

__all__ = [
    "TaskSpec",
    "Pair",
    "TASKS",
    "PAPER_PAIRS",
    "all_task_ids",
    "resolve_task",
    "resolve_pair",
    "pair_warning",
    "metaworld_transfer_pairs",
    "UnknownTaskError",
]


class UnknownTaskError(UserError, KeyError):
    """A task id, code or pair that the benchmark does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One benchmark task.

    Attributes:
      id: full id, ``<suite>-<task>``.
      code: the paper's short code (may contain ``*``).
      suite: ``metaworld``, ``robodesk`` or ``dmc``.
      sim_task: the simulator's own name for the task.
      action_dim: native action dimension.
      action_repeat: simulator steps per agent step.
      episode_steps: agent steps per episode (simulator steps / action repeat).
      paper_name: how the paper names the task.
      aliases: extra shell-friendly codes.
    """

    id: str
    code: str
    suite: str
    sim_task: str
    action_dim: int
    action_repeat: int
    episode_steps: int
    paper_name: str
    aliases: tuple[str, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.code, *self.aliases)


def _mw(code, name, paper, aliases=()):
    return TaskSpec(f"mw-{name}", code, "metaworld", f"{name}-v3", 4, 1, 500, paper, aliases)


def _rd(code, name, paper):
    return TaskSpec(f"rd-{name.replace('_', '-')}", code, "robodesk", name, 5, 1, 500, paper)


def _dmc(code, domain, variant, paper):
    # 1000 simulator steps at action repeat 2 = 500 agent steps.
    return TaskSpec(f"dmc-{domain}-{variant}", code, "dmc", f"{domain}-{variant}", 6, 2, 500, paper)


TASKS: tuple[TaskSpec, ...] = (
    _mw("DC*", "door-close", "Door Close", aliases=("DCS",)),
    _mw("BP", "button-press", "Button Press"),
    _mw("WC", "window-close", "Window Close"),
    _mw("HP", "handle-press", "Handle Press"),
    _mw("DC", "drawer-close", "Drawer Close"),
    _mw("BT", "button-press-topdown", "Button Topdown"),
    _rd("PG", "push_green", "Push Button"),
    _rd("OS", "open_slide", "Open Slide"),
    _rd("OD", "open_drawer", "Drawer Open"),
    _rd("UB", "upright_block_off_table", "Upright Block off Table"),
    _dmc("WW", "walker", "walk", "Walker Walk"),
    _dmc("WD", "walker", "downhill", "Walker Downhill"),
    _dmc("WU", "walker", "uphill", "Walker Uphill"),
    _dmc("WN", "walker", "nofoot", "Walker Nofoot"),
    _dmc("CR", "cheetah", "run", "Cheetah Run"),
    _dmc("CD", "cheetah", "downhill", "Cheetah Downhill"),
    _dmc("CU", "cheetah", "uphill", "Cheetah Uphill"),
    _dmc("CN", "cheetah", "nopaw", "Cheetah Nopaw"),
)

_BY_NAME: dict[str, TaskSpec] = {}
for _t in TASKS:
    for _name in (_t.id, *_t.codes):
        assert _name not in _BY_NAME, _name
        _BY_NAME[_name] = _t
_BY_LOWER = {k.lower(): v for k, v in _BY_NAME.items()}  # codes are accepted in any case
assert len(_BY_LOWER) == len(_BY_NAME)

PAPER_PAIRS: dict[str, tuple[str, ...]] = {
    "metaworld": ("BP-DC*", "DC-BP", "BT-WC", "BP-HP", "WC-DC", "HP-BT"),
    "dmc": ("WW-WD", "WW-WU", "WW-WN", "CR-CD", "CR-CU", "CR-CN"),
    "metaworld-robodesk": ("BP-PG", "WC-OS", "DC-OD", "HP-UB"),
}


@dataclasses.dataclass(frozen=True)
class Pair:
    """An online source task and an offline target task."""

    source: TaskSpec
    target: TaskSpec

    @property
    def name(self) -> str:
        """Shell-friendly name used for run directories (``BP-DCS``)."""
        return f"{_plain_code(self.source)}-{_plain_code(self.target)}"

    @property
    def paper_name(self) -> str:
        return f"{self.source.code}-{self.target.code}"

    @property
    def action_dim(self) -> int:
        """Both agents of a pair act in the larger action space (SPEC section 2)."""
        return max(self.source.action_dim, self.target.action_dim)


def _plain_code(task: TaskSpec) -> str:
    return next(c for c in task.codes if c.isalnum())


def all_task_ids() -> list[str]:
    return [t.id for t in TASKS]


def _valid_names() -> str:
    return ", ".join(f"{t.id} ({'/'.join(t.codes)})" for t in TASKS)


def resolve_task(name: str | TaskSpec) -> TaskSpec:
    """Returns the task for a full id or a code; raises listing the valid ones."""
    if isinstance(name, TaskSpec):
        return name
    task = _BY_NAME.get(name) or _BY_LOWER.get(name.strip().lower())
    if task is None:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(f"Unknown task {name!r}.{hint} Valid tasks: {_valid_names()}.")
    return task


def resolve_pair(name: str | None = None, *, source: str | None = None,
                 target: str | None = None) -> Pair:
    """Resolves ``"S-T"`` (codes) or explicit ``source=``/``target=`` ids or codes."""
    if name is not None:
        if source is not None or target is not None:
            raise UserError("Give a pair name or source/target, not both.")
        parts = name.split("-")
        if len(parts) != 2:
            raise UnknownTaskError(
                f"Pair {name!r} is not of the form SOURCE-TARGET with task codes "
                f"(e.g. BP-DC). For full ids use --source ID --target ID. "
                f"Valid codes: {', '.join(c for t in TASKS for c in t.codes)}.")
        source, target = parts
    if source is None or target is None:
        raise UserError("A pair needs both a source and a target.")
    try:
        pair = Pair(resolve_task(source), resolve_task(target))
    except UnknownTaskError as e:
        raise UnknownTaskError(f"In pair {name or f'{source}-{target}'!r}: {e}") from None
    if pair.source is pair.target:
        raise UserError(f"Pair {name or f'{source}-{target}'!r} has the same task as source and "
                        "target: a source is another task to learn from online. Pick another "
                        "source (the paper's pairs: coworld-bench list pairs), or run an "
                        "offline algorithm with --target alone.")
    return pair


# Source and target suites the paper pairs (SPEC section 2): within Meta-World, within
# DMC, and Meta-World sources for RoboDesk targets.
PAPER_SUITE_PAIRS = {("metaworld", "metaworld"), ("dmc", "dmc"), ("metaworld", "robodesk")}


def pair_warning(pair: Pair) -> str | None:
    """A sentence when the pair's suites are not ones the paper pairs (it runs, padded to
    the larger action space, but no result of the paper speaks to it); else None."""
    if (pair.source.suite, pair.target.suite) in PAPER_SUITE_PAIRS:
        return None
    return (f"{pair.source.suite} source {pair.source.id} for a {pair.target.suite} target "
            f"{pair.target.id}: the paper pairs Meta-World with Meta-World, DMC with DMC and "
            "Meta-World sources with RoboDesk targets; running it anyway.")


def metaworld_transfer_pairs() -> list[Pair]:
    """All 30 ordered pairs of the 6 Meta-World tasks (paper fig. 3, transfer matrix)."""
    mw = [t for t in TASKS if t.suite == "metaworld"]
    return [Pair(s, t) for s in mw for t in mw if s is not t]
