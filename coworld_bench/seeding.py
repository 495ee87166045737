"""Seeds derived from keys, and the random states a checkpoint must carry.

``derive_seed(*keys)`` turns a tuple of integers (run seed, stream, index, ...) into
an independent 32-bit seed; evaluation episodes and dataset episodes both use it,
with their own keys. ``RandomStates`` collects the named generators of an algorithm
(numpy Generators, torch Generators) so that its checkpoint saves and restores them
in one place rather than by hand in every ``state_dict``.

torch is imported where a generator is used, not here: simulator worker processes
import this module (through ``coworld_bench.evaluation``) and never need torch, whose
import took ~1.8 s of each worker's start-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["derive_seed", "RandomStates", "SEED_MAX", "check_seed"]

# Seeds are 32-bit: numpy's legacy global state and the simulators' resets take no more.
SEED_MAX = 2**32 - 1


def check_seed(seed: int, what: str = "--seed") -> int:
    """Returns ``seed`` if it lies in [0, SEED_MAX]; raises a UserError naming ``what``."""
    from coworld_bench.errors import UserError

    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"{what} {seed!r} is out of range; a seed is a whole number from 0 "
                        f"to {SEED_MAX} (2**32 - 1).")
    return seed


def derive_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class RandomStates:
    """Named random generators whose states travel with a checkpoint.

    ``RandomStates(sampler=sampler.rng, heads=torch_generator)``; ``state_dict()``
    gives plain data (torch.load(weights_only=True) reads it back) and
    ``load_state_dict`` restores every generator in place.
    """

    def __init__(self, **generators):
        import torch

        for name, gen in generators.items():
            if not isinstance(gen, (np.random.Generator, torch.Generator)):
                raise TypeError(f"{name}: a numpy Generator or torch Generator, got {gen!r}.")
        self.generators = generators

    def state_dict(self) -> dict[str, Any]:
        import torch

        return {name: (gen.get_state() if isinstance(gen, torch.Generator)
                       else gen.bit_generator.state)
                for name, gen in self.generators.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        for name, gen in self.generators.items():
            if isinstance(gen, torch.Generator):
                gen.set_state(state[name])
            else:
                gen.bit_generator.state = state[name]
