"""Schedules counted in updates: the paper's pretraining and target lengths, env steps
to updates, a check that pretraining leaves an offline phase, and a linear decay."""

from __future__ import annotations

import math


from coworld_bench.errors import ConfigError


# The paper's offline target updates after pretraining, by the target's suite.
PAPER_TARGET_UPDATES = {"metaworld": 300_000, "robodesk": 300_000, "dmc": 600_000}
# The paper's source pretraining, in environment steps (SPEC section 7).
PAPER_PRETRAINING = {"metaworld": dict(pretrain_env_steps=160_000),
                     "robodesk": dict(pretrain_env_steps=160_000),
                     "dmc": dict(pretrain_env_steps=600_000)}


def updates_for_env_steps(env_steps: int, train_every: int) -> int:
    """Updates of an online learner that takes ``train_every`` env steps per update."""
    return math.ceil(env_steps / train_every)


def check_pretraining(config, sources: int = 1):
    """The pretraining must leave updates for the offline phase."""
    if sources * config.pretrain_updates >= config.train_steps:
        raise ConfigError(f"pretrain_env_steps={config.pretrain_env_steps} is "
                          f"{sources * config.pretrain_updates} updates, not fewer than "
                          f"train_steps={config.train_steps}: raise train_steps or lower "
                          "pretrain_env_steps.")
    return config


def linear_schedule(step: int, initial: float, final: float, duration: int) -> float:
    """``initial`` at step 0, moving linearly to ``final`` at ``duration``, then held."""
    mix = min(max(step / duration, 0.0), 1.0)
    return (1.0 - mix) * initial + mix * final


def pretraining_lines(config, sources: int = 1) -> list[str]:
    """The estimate's sentence on online source pretraining (``Algorithm.schedule_lines``):
    schedules count updates, pretraining is given in environment steps."""
    return [f"The first {sources * config.pretrain_updates} of the {config.train_steps} updates "
            f"are online source pretraining ({config.pretrain_env_steps} environment steps per "
            f"source, {config.train_every} per update); the rest are offline updates."]
