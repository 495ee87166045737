"""coworld-bench: offline visual RL with online auxiliary simulators.

Importing the package selects headless EGL rendering for MuJoCo unless the user
chose a backend already: it must be set before any simulator is imported.

On a machine without a GPU, EGL is Mesa's llvmpipe, a CPU rasteriser that by default
splits every frame over one thread per core. For this package's 64x64 frames the
hand-offs cost more than they save: a Meta-World frame took 11.3 ms that way and
7.2 ms drawn in the calling thread (2-core AMD EPYC; 256x256: 13.6 against 11.3 ms),
with the same pixels to the byte (``tests/envs/test_render_threads.py``). So the
package asks for the latter (``LP_NUM_THREADS=0``) unless the user set it. Mesa reads
it when the first renderer starts; the NVIDIA driver ignores it.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] == "egl":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("LP_NUM_THREADS", "0")

__version__ = "0.1.0"
