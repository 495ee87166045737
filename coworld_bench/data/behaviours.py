"""Learning behaviours: agents whose online training episodes become a dataset.

The paper's datasets are the replay of a DreamerV2 agent as it learns (SPEC
section 3). The data layer owns what is kept (``select_prefix``) and how it is
written; the agent comes from a registered behaviour, found like an algorithm
through a Python entry point in the group ``coworld_bench.behaviours``::

    [project.entry-points."coworld_bench.behaviours"]
    dreamerv2 = "baselines.dreamerv2:DreamerV2Behaviour"

A behaviour class is built as ``Behaviour(env, replay_dir, seed, preset,
overrides)``; each ``step()`` trains it a little, playing environment steps whose
finished episodes it writes to ``replay_dir`` in the dataset format (``ep*.npz``);
``returns`` lists the returns of its finished episodes in order.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Protocol

from coworld_bench.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "LearningBehaviour", "names", "get"]

ENTRY_POINT_GROUP = "coworld_bench.behaviours"


class LearningBehaviour(Protocol):
    returns: list[float]

    def __init__(self, env: Any, replay_dir: Any, seed: int, preset: str,
                 overrides: dict[str, Any]): ...

    def step(self) -> None: ...


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


def get(name: str) -> type:
    source = _entry_points().get(name)
    if source is None:
        raise ConfigError(f"No learning behaviour {name!r} is installed; installed: "
                          f"{', '.join(names()) or 'none'}.")
    module, _, attr = source.partition(":")
    return getattr(importlib.import_module(module), attr)
