"""Meta-World's own scripted policies solve all six tasks through make()."""

import pytest

from benchmarks.metaworld_scripted import scripted_episode
from coworld_bench.tasks import TASKS

MW = [t for t in TASKS if t.suite == "metaworld"]


@pytest.mark.parametrize("task", MW, ids=[t.id for t in MW])
def test_scripted_policy_succeeds(task):
    # fast_render: pixels are irrelevant to the scripted policy and to the reward.
    total, first_success = scripted_episode(task, seed=1, fast_render=True)
    assert first_success is not None, f"{task.id}: no success in 500 steps (return {total:.0f})"
    assert total > 300, f"{task.id}: return {total:.0f}"
