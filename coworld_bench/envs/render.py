"""Off-screen MuJoCo rendering shared by the three simulators.

All three simulators are MuJoCo underneath, so one renderer serves them and one
switch (``fast_render``) means the same thing everywhere: shadows and reflections
off. On a CPU (Mesa llvmpipe through EGL) that makes a 64x64 Meta-World frame about
4x cheaper. ``antialias=False`` (one sample per pixel instead of MuJoCo's four) makes
it about 2.7x cheaper again. Both change the pixels, so they are environment options
that datasets record, and evaluation must use the dataset's settings.
"""

from __future__ import annotations

import atexit
import weakref

import numpy as np

__all__ = ["Camera", "MovingBackground"]


class Camera:
    """Renders one camera of a MuJoCo model to a ``(size, size, 3)`` uint8 image.

    Args:
      model: ``mujoco.MjModel``.
      size: image height and width in pixels.
      camera: camera name, camera id, or a ``mujoco.MjvCamera`` (free camera).
      fast: turn shadows and reflections off.
      antialias: multisample (the model's ``offsamples``, 4 by default); off = one
        sample per pixel. Sets the model's ``vis.quality.offsamples`` when off.
      flip: flip the image vertically. Meta-World's cameras were defined for
        mujoco-py, whose images came bottom row first; flipping gives the images
        that code (and the CoWorld authors' code) produced, right way up.
    """

    def __init__(self, model, size: int, camera, *, fast: bool = False, flip: bool = False,
                 width: int | None = None, antialias: bool = True):
        import mujoco

        self._mujoco = mujoco
        if not antialias:  # read when the renderer makes its off-screen buffer
            model.vis.quality.offsamples = 0
        self._renderer = mujoco.Renderer(model, height=size, width=width or size)
        self._camera = camera
        self._flip = flip
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = not fast
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = not fast
        self._segmenting = False
        _LIVE.add(self)
        # Simulators (dm_control, mujoco.egl) terminate the EGL display in their own
        # exit hooks; ours must run before theirs, and atexit runs last-registered
        # first, so re-register after every simulator import, i.e. here.
        atexit.unregister(_close_all)
        atexit.register(_close_all)

    def render(self, data) -> np.ndarray:
        if self._segmenting:
            self._renderer.disable_segmentation_rendering()
            self._segmenting = False
        self._renderer.update_scene(data, camera=self._camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1] if self._flip else image)

    def background_mask(self, data) -> np.ndarray:
        """Boolean mask of pixels that show no geom (the skybox)."""
        if not self._segmenting:
            self._renderer.enable_segmentation_rendering()
            self._segmenting = True
        self._renderer.update_scene(data, camera=self._camera)
        ids = self._renderer.render()[..., 0]
        mask = ids < 0
        return mask[::-1] if self._flip else mask

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# Renderers still alive when the EGL display is terminated at exit fail noisily
# in __del__; they are closed first.
_LIVE: "weakref.WeakSet[Camera]" = weakref.WeakSet()


def _close_all():
    for camera in list(_LIVE):
        camera.close()


class MovingBackground:
    """A generated moving texture standing in for the paper's video backgrounds.

    The paper's noisy DMC targets replace the background by natural videos; with no
    video source here, each episode gets a smooth random colour field that drifts
    along a Lissajous path, so the background changes every frame and carries no
    information about the task. Deterministic given the generator it is reset with.
    """

    def __init__(self, size: int, period: int = 100):
        self.size = size
        self.period = period
        self._texture = None
        self._phase = (0.0, 0.0)

    def reset(self, rng: np.random.Generator) -> None:
        coarse = rng.uniform(0, 255, size=(8, 8, 3))
        # Bilinear upsampling of a coarse random grid to a texture twice the image size.
        n = 2 * self.size
        grid = np.linspace(0, 7, n)
        i0 = np.floor(grid).astype(int).clip(0, 6)
        w = (grid - i0)[:, None]
        rows = coarse[i0] * (1 - w[..., None]) + coarse[i0 + 1] * w[..., None]
        w = (grid - i0)[None, :, None]
        tex = rows[:, i0] * (1 - w) + rows[:, i0 + 1] * w
        self._texture = tex.astype(np.uint8)
        self._phase = tuple(rng.uniform(0, 2 * np.pi, size=2))

    def frame(self, t: int) -> np.ndarray:
        if self._texture is None:
            raise RuntimeError("MovingBackground.reset(rng) must be called before frame().")
        half = self.size // 2
        angle = 2 * np.pi * t / self.period
        dy = int(round(half + half * np.sin(angle + self._phase[0])))
        dx = int(round(half + half * np.sin(2 * angle + self._phase[1])))
        return self._texture[dy:dy + self.size, dx:dx + self.size]
