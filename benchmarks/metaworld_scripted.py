"""Meta-World's scripted policies through coworld_bench.envs.make: success and returns.

    python benchmarks/metaworld_scripted.py [--seeds 1 2 3] [--fast-render]

Prints, per task and seed, the undiscounted 500-step dense return, whether the task
was solved, and the first step of success. The paper's best agents reach ~4000-4800;
the scripted policies solve every task but press with the gripper open and so do not
maximise this reward.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from coworld_bench import envs
from coworld_bench.envs.metaworld import scripted_policy
from coworld_bench.tasks import TASKS


def scripted_episode(task, seed: int, fast_render: bool):
    env = envs.make(task.id, seed=seed, fast_render=fast_render)
    policy = scripted_policy(task)
    obs, _ = env.reset()
    total, first_success, done, t = 0.0, None, False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += reward
        t += 1
        if info["success"] and first_success is None:
            first_success = t
        done = terminated or truncated
    env.close()
    return total, first_success


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--fast-render", action="store_true")
    args = parser.parse_args()
    print(f"{'task':<26}{'seed':>5}{'return':>10}{'solved':>8}{'first success':>15}{'time':>8}")
    for task in (t for t in TASKS if t.suite == "metaworld"):
        returns = []
        for seed in args.seeds:
            start = time.perf_counter()
            total, first = scripted_episode(task, seed, args.fast_render)
            returns.append(total)
            print(f"{task.id:<26}{seed:>5}{total:>10.1f}{str(first is not None):>8}"
                  f"{str(first):>15}{time.perf_counter() - start:>7.1f}s")
        if len(returns) > 1:
            print(f"{task.id:<26}{'mean':>5}{np.mean(returns):>10.1f} ± {np.std(returns):.1f}")


if __name__ == "__main__":
    main()
