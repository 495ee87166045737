"""Importing episodes written by other code: dreamer-style npz and V-D4RL hdf5."""

import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from coworld_bench import envs
from coworld_bench.data import Dataset, DatasetError, SequenceSampler, import_dataset


def cli(*args):
    return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dreamer_folder(tiny_dataset, tmp_path_factory):
    """Episodes as DreamerV2-style code writes them: compressed npz, variable lengths."""
    folder = tmp_path_factory.mktemp("dreamer") / "episodes"
    folder.mkdir()
    ds = Dataset(tiny_dataset)
    written = []
    for i, rows in enumerate([101, 301, 501]):
        ep = ds.load_episode(i % 2)
        arrays = {k: v[:rows].copy() for k, v in ep.items() if k != "state"}
        arrays["is_last"][:] = False
        arrays["is_last"][-1] = True
        arrays["log_extra"] = np.zeros(rows)  # extra keys some code writes
        np.savez_compressed(folder / f"20230101T0000{i:02d}-{i}-{rows - 1}.npz", **arrays)
        written.append(arrays)
    return folder, written


def test_import_dreamer_npz_folder(dreamer_folder, tmp_path):
    folder, written = dreamer_folder
    result = cli("data", "import", str(folder), "--task", "DC", "--out", str(tmp_path / "imp"))
    assert result.returncode == 0, result.stderr
    result = cli("data", "verify", str(tmp_path / "imp"))
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    ds = Dataset(tmp_path / "imp")
    assert list(ds.lengths) == [100, 300, 500]
    assert ds.manifest["config"]["dropped_keys"] == ["log_extra"]
    for i, arrays in enumerate(written):
        loaded = ds.load_episode(i)
        for key in ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(loaded[key], arrays[key])
    # Variable lengths: sequences of 200 rows come only from the two longer episodes.
    sampler = SequenceSampler(ds, 32, 200, seed=0)
    episode, start = sampler.sample_indices()
    assert set(episode) <= {1, 2} and np.all(start + 200 <= ds.lengths[episode] + 1)


def test_import_derives_missing_flags(tmp_path):
    env = envs.make("CR", seed=0, fast_render=True)
    obs, _ = env.reset()
    images, actions, rewards = [obs["image"]], [np.zeros(6, np.float32)], [0.0]
    for _ in range(20):
        obs, r, *_ = env.step(np.ones(6, np.float32) * 0.3)
        images.append(obs["image"]), actions.append(np.ones(6, np.float32) * 0.3), rewards.append(r)
    src = tmp_path / "old"
    src.mkdir()
    np.savez_compressed(src / "ep.npz", image=np.stack(images), action=np.stack(actions),
                        reward=np.array(rewards), discount=np.ones(21))
    import_dataset(src, tmp_path / "imp", "CR")
    ep = Dataset(tmp_path / "imp").load_episode(0)
    assert ep["is_first"][0] and not ep["is_first"][1:].any() and ep["is_last"][-1]
    assert ep["reward"].dtype == np.float32 and ep["discount"].dtype == np.float32


def test_import_vd4rl_hdf5_84px(tmp_path):
    """A V-D4RL-layout hdf5 file of two real 84px episodes, resized to 64 by BOX."""
    env = envs.make("WW", seed=0, fast_render=True, image_size=84)
    obs_list, act, rew, disc, step_type = [], [], [], [], []
    for episode in range(2):
        obs, _ = env.reset(seed=episode)
        obs_list.append(obs["image"]), act.append(np.zeros(6)), rew.append(0.0)
        disc.append(1.0), step_type.append(0)
        for t in range(10):
            a = np.full(6, 0.1 * (t - 5))
            obs, r, *_ = env.step(a)
            obs_list.append(obs["image"]), act.append(a), rew.append(r), disc.append(1.0)
            step_type.append(2 if t == 9 else 1)
    path = tmp_path / "walker_walk_medium.hdf5"
    with h5py.File(path, "w") as f:
        f["observation"] = np.stack(obs_list).transpose(0, 3, 1, 2)
        f["action"] = np.stack(act).astype(np.float32)
        f["reward"] = np.array(rew, np.float32)
        f["discount"] = np.array(disc, np.float32)
        f["step_type"] = np.array(step_type, np.uint8)
    import_dataset(path, tmp_path / "imp", "WW")
    ds = Dataset(tmp_path / "imp")
    assert list(ds.lengths) == [10, 10] and ds.image_shape == (64, 64, 3)
    ep = ds.load_episode(1)
    expected = np.asarray(Image.fromarray(obs_list[11]).resize((64, 64), Image.BOX))
    np.testing.assert_array_equal(ep["image"][0], expected)
    np.testing.assert_allclose(ep["reward"], rew[11:22], rtol=1e-6)
    assert ds.manifest["config"]["resize_filter"].startswith("PIL BOX")


def test_corrupt_source_file_is_named(dreamer_folder, tmp_path):
    folder, _ = dreamer_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    good = sorted(folder.glob("*.npz"))[0]
    (bad / "a.npz").write_bytes(good.read_bytes())
    (bad / "b.npz").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DatasetError) as err:
        import_dataset(bad, tmp_path / "out", "DC")
    assert str(bad / "b.npz") in str(err.value)
    result = cli("data", "import", str(bad), "--task", "DC", "--out", str(tmp_path / "out2"))
    assert result.returncode != 0 and "b.npz" in result.stderr
