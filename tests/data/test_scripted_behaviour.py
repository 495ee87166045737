"""The scripted behaviour as a learning agent's replay: from random level upwards,
stopped a normalised third of the way from random actions to the scripted policy."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from coworld_bench.data import CollectConfig, Dataset, DatasetError, collect, read_manifest
from coworld_bench.data.collection import run_episode, stop_reached, threshold_return
from coworld_bench.data.format import FORMAT_VERSION

# Button Press, 4 episodes: random-action probability 1, 2/3, 1/3, 0. The window is the
# whole budget, so all four are kept; R_ref and R_random from one reference episode each.
SCRIPTED = dict(task_id="BP", quality="medium-replay", behaviour="scripted", episodes=4,
                seed=0, window=4, reference_episodes=1,
                env={"fast_render": True, "antialias": False})


@pytest.fixture(scope="module")
def scripted_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("scripted") / "bp-mr"
    collect(CollectConfig(**SCRIPTED), out, workers=2, progress=False)
    return out


def test_returns_rise_from_random_level(scripted_dataset):
    manifest = read_manifest(scripted_dataset)
    episodes = manifest["episodes"]
    assert [e["random_prob"] for e in episodes] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    # Episode 0 is uniform random actions: the random behaviour's episode 0, step for step.
    random_config = CollectConfig(**{**SCRIPTED, "quality": "random", "behaviour": "random"})
    ds = Dataset(scripted_dataset)
    np.testing.assert_array_equal(ds.load_episode(0)["action"],
                                  run_episode(random_config, 0)["arrays"]["action"])
    returns = [e["return"] for e in episodes]
    scale = manifest["returns"]
    r_random, r_ref = scale["random_return"], scale["reference_return"]
    assert r_random < r_ref  # random actions earn less than the scripted policy
    # Random level first (below the medium level), the pure scripted policy last.
    assert returns[0] < threshold_return(1 / 3, r_random, r_ref) < returns[-1]
    assert returns[-1] > returns[0] + 0.5 * (r_ref - r_random)


def test_manifest_records_the_return_range(scripted_dataset):
    manifest = read_manifest(scripted_dataset)
    returns = np.array([e["return"] for e in manifest["episodes"]])
    scale = manifest["returns"]
    assert (scale["min"], scale["max"], scale["mean"]) == \
        pytest.approx((returns.min(), returns.max(), returns.mean()))
    r_random, r_ref = scale["random_return"], scale["reference_return"]
    assert manifest["config"]["random_return"] == r_random
    assert manifest["config"]["reference_return"] == r_ref
    normalised = (returns - r_random) / (r_ref - r_random)
    assert (scale["normalised"]["min"], scale["normalised"]["max"],
            scale["normalised"]["mean"]) == \
        pytest.approx((normalised.min(), normalised.max(), normalised.mean()))
    assert manifest["normalised_threshold"] == pytest.approx(1 / 3)
    assert manifest["threshold"] == pytest.approx(r_random + (r_ref - r_random) / 3)


def test_data_info_prints_the_return_range(scripted_dataset):
    scale = read_manifest(scripted_dataset)["returns"]
    result = subprocess.run([sys.executable, "-m", "coworld_bench.cli", "data", "info",
                             str(scripted_dataset)], capture_output=True, text=True,
                            env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"min {scale['min']:.1f}, max {scale['max']:.1f}" in out
    assert f"R_random {scale['random_return']:.1f}" in out
    assert f"R_ref {scale['reference_return']:.1f}" in out
    n = scale["normalised"]
    assert f"normalised mean {n['mean']:.2f}  [min {n['min']:.2f}, max {n['max']:.2f}]" in out
    assert "(normalised 0.33)" in out


def test_stop_rule_is_a_third_of_the_way_from_random_by_hand():
    # R_random 200, R_ref 565 (Button Press): the medium level is 200 + 365/3 = 321.7.
    assert threshold_return(1 / 3, 200.0, 565.0) == pytest.approx(321.6667, abs=1e-3)
    # Window 2: (300 + 330)/2 = 315 < 321.7; then (330 + 340)/2 = 335 >= 321.7.
    assert not stop_reached([250, 300, 330], 1 / 3, 2, 200.0, 565.0)
    assert stop_reached([250, 300, 330, 340], 1 / 3, 2, 200.0, 565.0)
    # A third of the raw return (188.3) would stop at the first window of random-level
    # episodes, (250 + 300)/2 = 275: that is R_random = 0.
    assert stop_reached([250, 300], 1 / 3, 2, 0.0, 565.0)
    # Never before the window is full.
    assert not stop_reached([600], 1 / 3, 2, 200.0, 565.0)
    # medium-expert: 0.9 of the way, 200 + 0.9 * 365 = 528.5.
    assert not stop_reached([528, 528], 0.9, 2, 200.0, 565.0)
    assert stop_reached([528, 529], 0.9, 2, 200.0, 565.0)


def test_random_action_probability_schedule():
    config = CollectConfig(**{**SCRIPTED, "episodes": 5})
    assert [config.random_prob(i) for i in range(5)] == pytest.approx([1, .75, .5, .25, 0])
    expert = CollectConfig(**{**SCRIPTED, "quality": "expert"})
    assert expert.random_prob(0) == 0.0  # the pure scripted policy
    with pytest.raises(ValueError, match="probability"):
        CollectConfig(**{**SCRIPTED, "random_start": 1.5})


def test_a_gaussian_noise_dataset_is_refused(tmp_path):
    """Scripted data made by the earlier Gaussian-noise behaviour (near-expert, whatever
    its label) is neither read (a run's data root) nor resumed: it must be remade."""
    old = tmp_path / "medium-replay-scripted-20ep-seed0-fast-noaa"
    old.mkdir()
    config = {**CollectConfig(**SCRIPTED).identity(), "noise_start": 1.0, "noise_end": 0.0,
              "reference_return": 565}
    for new in ("random_start", "random_end", "random_return"):
        del config[new]
    manifest = {"format_version": FORMAT_VERSION, "task_id": "mw-button-press",
                "quality": "medium-replay", "behaviour": "scripted", "config": config,
                "env": {"fast_render": True}, "episodes": [], "status": "complete"}
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="Gaussian action noise"):
        read_manifest(old)
    with pytest.raises(DatasetError, match="Gaussian action noise"):
        collect(CollectConfig(**{**SCRIPTED, "reference_return": 565.0}), old, progress=False)
