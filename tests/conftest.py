import os

# Headless rendering must be chosen before any simulator is imported.
os.environ.setdefault("MUJOCO_GL", "egl")
