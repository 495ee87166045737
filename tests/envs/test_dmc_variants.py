"""The DMC variants are built in code, as SPEC section 2 defines them."""

import hashlib
import math
import pathlib

import numpy as np
import pytest

from coworld_bench import envs


def stock_xml_hashes():
    from dm_control import suite

    root = pathlib.Path(suite.__file__).parent
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in ("walker.xml", "cheetah.xml")}


@pytest.fixture(scope="module")
def stock_hashes():
    return stock_xml_hashes()


def physics(task_id):
    return envs.make(task_id, seed=0, fast_render=True).unwrapped.physics


def tilt(gravity):
    """Signed angle (degrees) of gravity from straight down, positive towards +x."""
    return math.degrees(math.atan2(gravity[0], -gravity[2]))


@pytest.mark.parametrize("domain,base", [("walker", "walk"), ("cheetah", "run")])
def test_slopes_tilt_gravity_15_degrees_opposite_ways(domain, base):
    stock = physics(f"dmc-{domain}-{base}").model.opt.gravity
    down = physics(f"dmc-{domain}-downhill").model.opt.gravity
    up = physics(f"dmc-{domain}-uphill").model.opt.gravity
    assert tilt(stock) == pytest.approx(0.0)
    assert tilt(down) == pytest.approx(15.0, abs=1e-4)  # downhill: gravity along +x
    assert tilt(up) == pytest.approx(-15.0, abs=1e-4)
    for g in (down, up):
        assert np.linalg.norm(g) == pytest.approx(np.linalg.norm(stock), abs=1e-4)
        assert g[1] == 0.0
    np.testing.assert_allclose(up, [-2.54, 0, -9.47], atol=0.01)


@pytest.mark.parametrize("domain,base,floor", [("walker", "walk", "floor"),
                                               ("cheetah", "run", "ground")])
def test_slopes_roll_camera_and_enlarge_floor(domain, base, floor):
    stock = physics(f"dmc-{domain}-{base}").model
    for variant, sign in (("downhill", 1), ("uphill", -1)):
        model = physics(f"dmc-{domain}-{variant}").model
        # Enlarged along x only (SPEC section 7); test_slope_floor_sizes checks all three.
        assert model.geom(floor).size[0] == 1000
        assert model.geom(floor).size[1] == pytest.approx(0.8)
        # Relative rotation between the stock and the rolled camera: a pure roll
        # about the camera's own viewing (z) axis by 15 degrees.
        q0, q1 = stock.cam_quat[0], model.cam_quat[0]
        w0, v0 = q0[0], q0[1:]
        rel_w = w0 * q1[0] + v0 @ q1[1:]
        rel_v = w0 * q1[1:] - q1[0] * v0 - np.cross(v0, q1[1:])
        assert rel_v[:2] == pytest.approx([0, 0], abs=1e-6)
        angle = math.degrees(2 * math.atan2(rel_v[2], rel_w))
        assert angle == pytest.approx(sign * 15.0, abs=1e-4)
        np.testing.assert_allclose(model.cam_pos[0], stock.cam_pos[0])


# The authors' XML: x enlarged to 1000, y and z as stock dm_control has them.
AUTHORS_SLOPE_FLOOR = {"walker": ("floor", [1000, 0.8, 0.2]),
                       "cheetah": ("ground", [1000, 0.8, 0.5])}
STOCK_FLOOR = {"walker": [250, 0.8, 0.2], "cheetah": [100, 0.8, 0.5]}


def stock_floor_size(domain):
    """The floor size of dm_control's own, unmodified model."""
    from dm_control.suite import cheetah, walker

    module = {"walker": walker, "cheetah": cheetah}[domain]
    name = AUTHORS_SLOPE_FLOOR[domain][0]
    stock = module.Physics.from_xml_string(*module.get_model_and_assets())
    return stock.named.model.geom_size[name]


@pytest.mark.parametrize("domain,variants", [
    ("walker", ("walk", "nofoot", "uphill", "downhill")),
    ("cheetah", ("run", "nopaw", "uphill", "downhill")),
])
def test_slope_floor_sizes(domain, variants):
    name, authors = AUTHORS_SLOPE_FLOOR[domain]
    stock = stock_floor_size(domain)
    np.testing.assert_allclose(stock, STOCK_FLOOR[domain])  # the dm_control these values match
    for variant in variants:
        size = physics(f"dmc-{domain}-{variant}").named.model.geom_size[name]
        if variant in ("uphill", "downhill"):
            np.testing.assert_allclose(size, authors, err_msg=variant)
        else:
            np.testing.assert_array_equal(size, stock, err_msg=variant)


@pytest.mark.parametrize("task_id,base_id,geom", [
    ("dmc-walker-nofoot", "dmc-walker-walk", "right_foot"),
    ("dmc-cheetah-nopaw", "dmc-cheetah-run", "ffoot"),
])
def test_foot_geoms_shrunk_actuators_kept(task_id, base_id, geom):
    stock, model = physics(base_id).model, physics(task_id).model
    assert np.all(model.geom(geom).size[:2] == pytest.approx(0.001))
    assert stock.geom(geom).size[0] > 0.04
    assert model.nu == stock.nu == 6
    other = "left_foot" if geom == "right_foot" else "bfoot"
    np.testing.assert_allclose(model.geom(other).size, stock.geom(other).size)
    np.testing.assert_allclose(model.opt.gravity, stock.opt.gravity)


def test_stock_xml_on_disk_unchanged(stock_hashes):
    for task_id in ("dmc-walker-uphill", "dmc-walker-nofoot", "dmc-cheetah-downhill",
                    "dmc-cheetah-nopaw"):
        env = envs.make(task_id, seed=0, fast_render=True)
        env.reset()
        env.step(np.zeros(6, np.float32))
    assert stock_xml_hashes() == stock_hashes


def test_dmc_action_repeat_two():
    env = envs.make("WW", seed=0, fast_render=True)
    env.reset()
    env.step(np.zeros(6, np.float32))
    assert env.unwrapped.physics.data.time == pytest.approx(2 * 0.025)


@pytest.mark.parametrize("task_id", ["WW", "CR"])
def test_reset_with_the_same_seed_repeats_the_episode(task_id):
    """reset(seed=s) reseeds every time, also when s is the seed used last."""
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 6)).astype(np.float32)

    def episode(env, seed):
        frames = [env.reset(seed=seed)[0]["image"]]
        for action in actions:
            frames.append(env.step(action)[0]["image"])
        return frames

    env = envs.make(task_id, seed=5, image_size=64, fast_render=True)
    first = episode(env, 5)
    again = episode(env, 5)  # the same seed as the env's and as the last reset
    fresh = episode(envs.make(task_id, seed=0, image_size=64, fast_render=True), 5)
    other = episode(env, 6)
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[0], other[0]), "the seed does not change the start"
