"""Mesa's llvmpipe rasterises in the calling thread by default here (``LP_NUM_THREADS=0``,
set on import of ``coworld_bench``): the same pixels as its threaded rasteriser, on
every simulator and render setting."""

import os
import subprocess
import sys

PROBE = r"""
import hashlib, sys
import numpy as np
from coworld_bench import envs
digests = []
for code, options in [("WC", dict(fast_render=True, antialias=False)),
                      ("DC", dict(fast_render=False, antialias=True)),
                      ("WW", dict(fast_render=False, antialias=True)),
                      ("PG", dict(fast_render=True, antialias=False))]:
    env = envs.make(code, seed=0, **options)
    obs, _ = env.reset(seed=3)
    digest = hashlib.sha1(obs["image"].tobytes())
    rng = np.random.default_rng(0)
    for _ in range(8):
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        digest.update(obs["image"].tobytes())
    env.close()
    digests.append(digest.hexdigest())
print(" ".join(digests))
"""


def render_digests(lp_num_threads: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    if lp_num_threads is not None:
        env["LP_NUM_THREADS"] = lp_num_threads
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_package_import_sets_single_thread_rasterising_unless_the_user_chose():
    code = "import os, coworld_bench; print(os.environ['LP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "LP_NUM_THREADS": "3"},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert (default, chosen) == ("0", "3")


def test_single_thread_rasterising_gives_the_same_pixels():
    default = render_digests(None)
    threaded = render_digests("2")
    assert len(default) == 4 and len(set(default)) == 4  # four different scenes
    assert default == threaded
