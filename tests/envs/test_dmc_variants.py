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
        assert model.geom(floor).size[0] == model.geom(floor).size[1] == 1000
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
