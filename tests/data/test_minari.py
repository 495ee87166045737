"""Minari export and import on real Meta-World and DMC datasets, read back through
Minari's own API and d3rlpy."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import minari
import numpy as np
import pytest

from coworld_bench import cli, protocol
from coworld_bench.data import CollectConfig, Dataset, collect, write_episode
from coworld_bench.data.format import episode_name, sha256_file
from coworld_bench.data.minari_io import export_minari, import_minari
from coworld_bench.errors import ConfigError, UserError

ENV = {"fast_render": True, "antialias": False}
MW_ID = "coworld-bench/mw-drawer-close/random-seed0-v0"
DMC_ID = "coworld-bench/dmc-walker-walk/random-seed0-v0"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """Minari's datasets folder for this module (never the user's ~/.minari)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        yield root


def _two_random_episodes(tmp_path_factory, task_id: str):
    out = tmp_path_factory.mktemp("minari-data") / task_id.lower()
    collect(CollectConfig(task_id=task_id, quality="random", episodes=2, seed=0, env=ENV), out,
            progress=False)
    return out


@pytest.fixture(scope="module")
def mw_dataset(tmp_path_factory):
    """Two random Drawer Close episodes from the real simulator (500 steps each)."""
    return _two_random_episodes(tmp_path_factory, "DC")


@pytest.fixture(scope="module")
def dmc_dataset(tmp_path_factory):
    """Two random Walker Walk episodes from the real simulator (500 steps each)."""
    return _two_random_episodes(tmp_path_factory, "WW")


@pytest.fixture(scope="module")
def exported(minari_root, mw_dataset, dmc_dataset):
    """Both datasets exported under their default ids, with the protocol's references
    (Meta-World's from the shipped table; DMC's V-D4RL 0 and 1000)."""
    mw = export_minari(mw_dataset)
    dmc = export_minari(dmc_dataset, minari_root)
    return {MW_ID: (mw, mw_dataset), DMC_ID: (dmc, dmc_dataset)}


@pytest.fixture(scope="module")
def terminal_dataset(dmc_dataset, tmp_path_factory):
    """The DMC data with episode 1 cut to 5 steps ending in a real termination
    (is_terminal, discount 0 on its last row), and a discount of 0.5 on a row of
    episode 0 that no terminal explains."""
    out = tmp_path_factory.mktemp("minari-data") / "terminal"
    shutil.copytree(dmc_dataset, out)
    manifest = json.loads((out / "manifest.json").read_text())
    dataset = Dataset(out)
    edits = {0: {k: v.copy() for k, v in dataset.load_episode(0).items()},
             1: {k: v[:6].copy() for k, v in dataset.load_episode(1).items()}}
    dataset.close()
    edits[0]["discount"][3] = 0.5
    edits[1]["is_last"][-1] = edits[1]["is_terminal"][-1] = True
    edits[1]["discount"][-1] = 0.0
    for index, rows in edits.items():
        entry = manifest["episodes"][index]
        (out / entry["file"]).unlink()
        entry["steps"] = len(rows["reward"]) - 1
        entry["file"] = episode_name(index, entry["steps"])
        entry["return"] = float(rows["reward"].sum())
        write_episode(out / entry["file"], rows)
        entry["sha256"] = sha256_file(out / entry["file"])
    manifest["step_count"] = sum(e["steps"] for e in manifest["episodes"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def assert_minari_convention(minari_dataset, dataset_dir):
    """Minari's episodes against the benchmark's rows: observations = image (T+1),
    actions/rewards/terminations = rows 1.. of action/reward/is_terminal, truncations
    = is_last & ~is_terminal of rows 1.., infos["state"] = state (T+1)."""
    ours = Dataset(dataset_dir)
    episodes = list(minari_dataset.iterate_episodes())
    assert len(episodes) == len(ours) and minari_dataset.total_steps == ours.num_steps
    for index, episode in enumerate(episodes):
        rows = ours.load_episode(index)
        np.testing.assert_array_equal(episode.observations, rows["image"])
        np.testing.assert_array_equal(episode.actions, rows["action"][1:])
        np.testing.assert_array_equal(episode.rewards, rows["reward"][1:])
        np.testing.assert_array_equal(episode.terminations, rows["is_terminal"][1:])
        np.testing.assert_array_equal(episode.truncations,
                                      rows["is_last"][1:] & ~rows["is_terminal"][1:])
        np.testing.assert_array_equal(episode.infos["state"], rows["state"])
        assert episode.observations.dtype == np.uint8
        assert episode.actions.dtype == episode.rewards.dtype == np.float32
        assert episode.terminations.dtype == episode.truncations.dtype == np.bool_
    ours.close()
    return episodes


def assert_same_dataset(original_dir, imported_dir):
    """Every array of every episode equal in dtype and values; the manifest's task,
    quality, behaviour, seed, env options and per-episode returns equal."""
    original, imported = Dataset(original_dir), Dataset(imported_dir)  # both verified
    assert len(imported) == len(original)
    for index in range(len(original)):
        a, b = original.load_episode(index), imported.load_episode(index)
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    m, n = original.manifest, imported.manifest
    for key in ("task_id", "quality", "behaviour", "seed", "env", "config", "returns",
                "episode_count", "step_count"):
        assert n[key] == m[key], key
    for before, after in zip(m["episodes"], n["episodes"]):
        for key in ("steps", "return", "success", "random_prob"):
            assert after[key] == before[key], key
    assert n["imported"]["format"] == "minari"
    original.close(), imported.close()


def test_minari_reads_our_episodes_under_its_convention(exported):
    for dataset_id, (path, dataset_dir) in exported.items():
        loaded = minari.load_dataset(dataset_id)
        assert Path(loaded.storage.data_path) == path / "data"
        space = loaded.observation_space
        assert space.shape == (64, 64, 3) and space.dtype == np.uint8
        assert loaded.action_space.shape == (Dataset(dataset_dir).action_dim,)
        episodes = assert_minari_convention(loaded, dataset_dir)
        assert all(e.truncations[-1] and not e.terminations.any() for e in episodes)
        assert all(set(e.infos) == {"state"} for e in episodes)  # discount follows the flags


def test_metadata_records_the_task_the_behaviour_and_the_references(exported):
    for dataset_id, (path, dataset_dir) in exported.items():
        manifest = Dataset(dataset_dir).manifest
        metadata = minari.load_dataset(dataset_id).storage.metadata
        ours = metadata["coworld_bench"]
        assert json.loads(ours["manifest"]) == manifest
        assert (ours["task_id"], ours["quality"], ours["behaviour"], ours["seed"]) == (
            manifest["task_id"], "random", "random", 0)
        assert ours["env"] == manifest["env"] and ours["env_options"] == ENV
        assert metadata["algorithm_name"] == "random"
        spec = json.loads(metadata["env_spec"])
        assert spec["kwargs"] == {"task_id": manifest["task_id"], **ENV}
        assert spec["entry_point"] == "coworld_bench.data.minari_io:make_env"
        assert metadata["eval_env_spec"] == metadata["env_spec"]
    mw = minari.load_dataset(MW_ID)
    refs = protocol.references("DC")
    assert (mw.storage.metadata["ref_min_score"], mw.storage.metadata["ref_max_score"]) == (
        refs["random"], refs["reference"])
    assert refs["random_episodes"] == 50  # the shipped table's: uniform random, 50 episodes
    dmc = minari.load_dataset(DMC_ID)
    refs = protocol.references("WW")
    assert (dmc.storage.metadata["ref_min_score"], dmc.storage.metadata["ref_max_score"]) == (
        refs["random"], refs["reference"]) == (0.0, 1000.0)
    # Minari's normalised score is the protocol's / 100.
    score = 437.0
    assert minari.get_normalized_score(dmc, np.array([score]))[0] == pytest.approx(
        protocol.normalised(score, refs) / 100)


def test_import_of_an_export_is_lossless(exported, tmp_path):
    for dataset_id, (path, dataset_dir) in exported.items():
        # Meta-World's by its folder, DMC's by id; neither needs --task.
        source = path if dataset_id == MW_ID else dataset_id
        out = tmp_path / dataset_id.replace("/", "_")
        manifest = import_minari(source, out)
        assert manifest["imported"]["dataset_id"] == dataset_id
        assert_same_dataset(dataset_dir, out)


def test_terminations_and_an_odd_discount_round_trip(terminal_dataset, minari_root, tmp_path):
    export_minari(terminal_dataset, name="test/terminal-v0", references=False)
    loaded = minari.load_dataset("test/terminal-v0")
    episodes = assert_minari_convention(loaded, terminal_dataset)
    assert len(episodes[1].rewards) == 5
    assert episodes[1].terminations[-1] and not episodes[1].truncations.any()
    assert episodes[0].truncations[-1] and not episodes[0].terminations.any()
    # Episode 0's discount does not follow from its flags: Minari keeps it in infos.
    assert episodes[0].infos["discount"][3] == 0.5 and "discount" not in episodes[1].infos
    import_minari("test/terminal-v0", tmp_path / "back", task_id="WW")
    assert_same_dataset(terminal_dataset, tmp_path / "back")


def test_a_minari_dataset_made_elsewhere_imports_with_its_task(dmc_dataset, exported, tmp_path):
    """A dataset written with Minari's own API and layout choices, not ours: Dict
    observations (pixels, proprio), float64 rewards, no coworld-bench metadata."""
    import gymnasium as gym

    ours = Dataset(dmc_dataset)
    buffers = []
    for index in range(len(ours)):
        rows = ours.load_episode(index)
        buffers.append(minari.data_collector.EpisodeBuffer(
            observations={"pixels": rows["image"], "proprio": rows["state"]},
            actions=rows["action"][1:], rewards=rows["reward"][1:].astype(np.float64),
            terminations=rows["is_terminal"][1:], truncations=rows["is_last"][1:]))
    spaces = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8),
                              "proprio": gym.spaces.Box(-np.inf, np.inf, (24,), np.float32)})
    with pytest.warns(UserWarning):  # Minari's warnings about the metadata left out
        minari.create_dataset_from_buffers(
            "elsewhere/walker-v0", buffers, observation_space=spaces,
            action_space=gym.spaces.Box(-1, 1, (6,), np.float32), jpeg_encoding=False)
    with pytest.raises(ConfigError, match="--task"):
        import_minari("elsewhere/walker-v0", tmp_path / "no-task")
    manifest = import_minari("elsewhere/walker-v0", tmp_path / "imp", task_id="WW")
    assert (manifest["task_id"], manifest["quality"], manifest["behaviour"], manifest["seed"]) \
        == ("dmc-walker-walk", "imported", "unknown", None)
    assert manifest["config"]["dropped_keys"] == ["observations/proprio"]
    imported = Dataset(tmp_path / "imp")
    for index in range(len(ours)):
        a, b = ours.load_episode(index), imported.load_episode(index)
        assert "state" not in b
        for key in ("image", "action", "reward", "discount", "is_first", "is_last",
                    "is_terminal"):
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert imported.manifest["episodes"][index]["return"] == pytest.approx(
            ours.manifest["episodes"][index]["return"], rel=1e-5)
    with pytest.raises(ConfigError, match="holds dmc-walker-walk data"):
        import_minari(DMC_ID, tmp_path / "wrong-task", task_id="DC")


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_cli_exports_and_imports(dmc_dataset, tmp_path):
    root = tmp_path / "minari"
    result = run_cli("data", "export", str(dmc_dataset), "--format", "minari", "--out",
                     str(root), "--name", "cli/walker-v1",
                     MINARI_DATASETS_PATH=str(tmp_path / "unused"))
    assert result.returncode == 0, result.stderr
    assert f"Wrote Minari dataset cli/walker-v1 to {root / 'cli/walker-v1'}" in result.stdout
    assert (root / "cli/walker-v1/data/metadata.json").exists()
    assert not (tmp_path / "unused").exists()  # --out, not the environment's folder
    # The same id again: refused (the message names --name), exit 2.
    assert cli.main(["data", "export", str(dmc_dataset), "--out", str(root),
                     "--name", "cli/walker-v1"]) == 2
    with pytest.raises(UserError, match="already exists.*another --name"):
        export_minari(dmc_dataset, root, "cli/walker-v1")
    assert cli.main(["data", "import", str(root / "cli/walker-v1"), "--format", "minari",
                     "--out", str(tmp_path / "back")]) == 0
    assert_same_dataset(dmc_dataset, tmp_path / "back")
    assert cli.main(["data", "verify", str(tmp_path / "back")]) == 0
    # The dreamer and V-D4RL formats still need their task.
    result = run_cli("data", "import", str(tmp_path / "back"), "--out", str(tmp_path / "npz"))
    assert result.returncode == 2 and "needs --task" in result.stderr


def test_missing_minari_names_the_install_command(dmc_dataset, tmp_path, monkeypatch):
    hint = "Minari is not installed: pip install -e '.[minari]'"
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` raises ImportError
    with pytest.raises(UserError, match=re.escape(hint)):
        export_minari(dmc_dataset, tmp_path)
    with pytest.raises(UserError, match=re.escape(hint)):
        import_minari(DMC_ID, tmp_path / "out")
    code = ("import sys; sys.modules['minari'] = None; from coworld_bench.cli import main; "
            f"sys.exit(main(['data', 'export', {str(dmc_dataset)!r}, '--out', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and hint in result.stderr, result.stderr


def _docs_snippet() -> str:
    """The d3rlpy code block of docs/datasets.md's Minari section."""
    section = DOCS.read_text().split("## Minari", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return next(b for b in blocks if "MDPDataset" in b)


def test_docs_snippet_builds_a_d3rlpy_dataset_aligned_with_ours(exported):
    _, dataset_dir = exported[DMC_ID]
    scope = {}
    exec(_docs_snippet(), scope)  # loads DMC_ID from this module's Minari folder
    dataset = scope["dataset"]
    ours = Dataset(dataset_dir)
    assert len(dataset.episodes) == len(ours)
    for index, episode in enumerate(dataset.episodes):
        rows = ours.load_episode(index)
        np.testing.assert_array_equal(episode.observations,
                                      rows["image"][:-1].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(episode.actions, rows["action"][1:])
        np.testing.assert_array_equal(episode.rewards[:, 0], rows["reward"][1:])
        assert not episode.terminated and episode.transition_count == ours.lengths[index] - 1
        # d3rlpy's transition t: frame t, the action taken there, the reward it got, frame t+1.
        for t in (0, 7, int(ours.lengths[index]) - 2):
            transition = dataset.transition_picker(episode, t)
            np.testing.assert_array_equal(transition.observation,
                                          rows["image"][t].transpose(2, 0, 1))
            np.testing.assert_array_equal(transition.next_observation,
                                          rows["image"][t + 1].transpose(2, 0, 1))
            np.testing.assert_array_equal(transition.action, rows["action"][t + 1])
            assert transition.reward[0] == rows["reward"][t + 1]


def test_recorded_env_spec_makes_the_env_and_d3rlpys_get_minari_shifts_episodes(exported):
    """``recover_environment`` makes the benchmark env as the data sees it. d3rlpy's
    own Minari loader reads our export, but starts episode 1 one frame early (on
    episode 0's final frame), which is why the docs build the MDPDataset themselves."""
    from d3rlpy.datasets import get_minari

    _, dataset_dir = exported[DMC_ID]
    ours = Dataset(dataset_dir)
    loaded = minari.load_dataset(DMC_ID)
    env = loaded.recover_environment()
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert info["state"].shape == ours.load_episode(0)["state"].shape[1:]
        assert env.unwrapped.description == ours.manifest["env"]
    finally:
        env.close()
    dataset, d3_env = get_minari(DMC_ID)
    d3_env.close()
    first, second = ours.load_episode(0), ours.load_episode(1)
    np.testing.assert_array_equal(dataset.episodes[0].observations[0], first["image"][0])
    np.testing.assert_array_equal(dataset.episodes[1].observations[0], first["image"][-1])
    assert not np.array_equal(dataset.episodes[1].observations[0], second["image"][0])
