"""DeepMind Control walker and cheetah, with the paper's variants (SPEC section 2).

Variants are built at load time from dm_control's own XML string; nothing on disk
is edited:

- ``uphill`` / ``downhill``: gravity tilted by 15 degrees, (-2.54, 0, -9.47) uphill
  and (+2.54, 0, -9.47) downhill (the body moves along +x); camera 0 rolled by
  15 degrees so the ground looks sloped the same way; the floor enlarged to 1000
  along x only, to the authors' sizes (``SLOPE_FLOOR_SIZE``), so its end stays out
  of the rolled view while the rendered ground is the same strip (SPEC section 7).
- walker ``nofoot``: the right foot geom shrunk to size 0.001; cheetah ``nopaw``: the
  front foot (``ffoot``) geom shrunk to 0.001. Actuators are kept (6-d action).

Settings: camera 0, action repeat 2, 1000 simulator steps (500 agent steps); the
reward is walker-walk's / cheetah-run's.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from coworld_bench.envs.base import BenchmarkEnv, EnvOptions
from coworld_bench.envs.render import Camera, MovingBackground
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import TaskSpec

SLOPE_DEGREES = 15.0
GRAVITY = 9.81
# The slopes' floor/ground geom size, the authors' XML values: only x is enlarged
# (to 1000) so the rolled view never reaches the end of the floor; y and z are
# stock dm_control's (walker floor "250 .8 .2", cheetah ground "100 .8 .5"), so the
# rendered ground is the same 0.8-wide strip. The stock geom pos is kept.
SLOPE_FLOOR_SIZE = {"walker": (1000.0, 0.8, 0.2), "cheetah": (1000.0, 0.8, 0.5)}
SHRUNK_SIZE = 0.001
_FLOOR = {"walker": "floor", "cheetah": "ground"}
_FOOT = {"walker": "right_foot", "cheetah": "ffoot"}
# Which way gravity leans, per variant: +1 = along +x, the direction of motion.
_SLOPE_SIGN = {"downhill": +1.0, "uphill": -1.0}


def _domain_module(domain: str):
    from dm_control.suite import cheetah, walker

    return {"walker": walker, "cheetah": cheetah}[domain]


def _quat_mul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def slope_gravity(variant: str) -> np.ndarray:
    """Gravity of the uphill/downhill variants: 9.81 m/s^2 tilted by 15 degrees in x."""
    angle = math.radians(SLOPE_DEGREES)
    return np.array([_SLOPE_SIGN[variant] * GRAVITY * math.sin(angle), 0.0,
                     -GRAVITY * math.cos(angle)])


def variant_xml(domain: str, variant: str) -> tuple[str, dict]:
    """The MJCF string and assets of a walker/cheetah variant, built from the stock XML."""
    import mujoco

    xml, assets = _domain_module(domain).get_model_and_assets()
    if isinstance(xml, bytes):
        xml = xml.decode()
    if variant in ("walk", "run"):
        return xml, assets
    root = ET.fromstring(xml)
    geoms = {g.get("name"): g for g in root.iter("geom")}
    if variant in ("nofoot", "nopaw"):
        geoms[_FOOT[domain]].set("size", f"{SHRUNK_SIZE} {SHRUNK_SIZE}")
    elif variant in _SLOPE_SIGN:
        option = root.find("option")
        if option is None:
            option = ET.SubElement(root, "option")
        option.set("gravity", " ".join(f"{g:.6f}" for g in slope_gravity(variant)))
        geoms[_FLOOR[domain]].set("size", " ".join(f"{v:g}" for v in SLOPE_FLOOR_SIZE[domain]))
        # Camera 0's orientation in its body frame, as MuJoCo compiles it from the
        # stock XML (euler/quat/xyaxes alike), then rolled about its viewing axis.
        stock = mujoco.MjModel.from_xml_string(xml, assets)
        name = stock.camera(0).name
        camera = next(c for c in root.iter("camera") if c.get("name") == name)
        roll = _SLOPE_SIGN[variant] * math.radians(SLOPE_DEGREES)
        q_roll = np.array([math.cos(roll / 2), 0.0, 0.0, math.sin(roll / 2)])
        quat = _quat_mul(stock.cam_quat[0], q_roll)
        for key in ("euler", "xyaxes", "zaxis", "axisangle", "quat"):
            camera.attrib.pop(key, None)
        camera.set("quat", " ".join(f"{q:.8f}" for q in quat))
    else:
        raise ConfigError(f"Unknown {domain} variant {variant!r}.")
    return ET.tostring(root, encoding="unicode"), assets


def make_dm_env(domain: str, variant: str, seed: int | None):
    """A dm_control ``Environment`` for a benchmark variant."""
    from dm_control.rl import control

    module = _domain_module(domain)
    xml, assets = variant_xml(domain, variant)
    physics = module.Physics.from_xml_string(xml, assets)
    random = np.random.RandomState(seed)
    if domain == "walker":
        task = module.PlanarWalker(move_speed=module._WALK_SPEED, random=random)
        return control.Environment(physics, task, time_limit=module._DEFAULT_TIME_LIMIT,
                                   control_timestep=module._CONTROL_TIMESTEP)
    task = module.Cheetah(random=random)
    return control.Environment(physics, task, time_limit=module._DEFAULT_TIME_LIMIT)


class DMCEnv(BenchmarkEnv):
    def __init__(self, task: TaskSpec, options: EnvOptions, seed: int | None = None):
        if options.sparse_reward:
            raise ConfigError(f"{task.id}: sparse_reward needs a success signal and DMC tasks "
                             "define none; use a Meta-World or RoboDesk source.")
        if options.camera not in (None, "0"):
            raise ConfigError("DMC tasks use camera 0; camera must be left unset.")
        self._domain, self._variant = task.sim_task.split("-")
        self._env = make_dm_env(self._domain, self._variant, seed)
        model = self._env.physics.model.ptr
        self._camera = Camera(model, options.image_size, 0, fast=options.fast_render,
                              antialias=options.antialias)
        self._background = MovingBackground(options.image_size) if options.moving_background else None
        self._bg_rng = np.random.default_rng(seed)
        self._frame = 0
        self.camera_name = "0"
        self.state_dim = int(sum(np.prod(s.shape) for s in self._env.observation_spec().values()))
        super().__init__(task, options, seed)

    @property
    def physics(self):
        return self._env.physics

    def _state(self, time_step):
        return np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1)
                               for v in time_step.observation.values()])

    def _sim_seed(self, seed):
        # Reseed on every reset(seed=s), even if s is the seed used last: the task's
        # RandomState has advanced since, and reset(seed=s) must repeat the episode.
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
            self._bg_rng = np.random.default_rng(seed)

    def _sim_reset(self):
        time_step = self._env.reset()
        self._frame = 0
        if self._background is not None:
            self._background.reset(self._bg_rng)
        return self._state(time_step), {}

    def _sim_step(self, action):
        reward = 0.0
        for _ in range(self.task.action_repeat):
            time_step = self._env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():
                break
        self._frame += 1
        terminated = time_step.last() and time_step.discount == 0.0
        return reward, bool(terminated), self._state(time_step), {}

    def _sim_render(self):
        data = self._env.physics.data.ptr
        image = self._camera.render(data)
        if self._background is not None:
            mask = self._camera.background_mask(data)
            image = np.where(mask[..., None], self._background.frame(self._frame), image)
        return image

    def close(self):
        self._camera.close()
        self._env.close()
