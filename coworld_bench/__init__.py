"""coworld-bench: offline visual RL with online auxiliary simulators.

Importing the package selects headless EGL rendering for MuJoCo unless the user
chose a backend already: it must be set before any simulator is imported.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] == "egl":
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

__version__ = "0.1.0"
