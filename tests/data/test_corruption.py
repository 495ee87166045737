"""Damaged files are reported by name; nothing else in the dataset is touched."""

import json
import shutil

import numpy as np
import pytest

from coworld_bench.data import Dataset, DatasetError, verify_dataset
from coworld_bench.data.format import atomic_write_json, sha256_file


@pytest.fixture
def copy(tiny_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_dataset, out)
    return out


def snapshot(directory):
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir())}


def damage_and_check(directory, damage, match):
    manifest = json.loads((directory / "manifest.json").read_text())
    victim = directory / manifest["episodes"][1]["file"]
    damage(victim, manifest)
    before = snapshot(directory)
    for check in (verify_dataset, Dataset):
        with pytest.raises(DatasetError, match=match) as err:
            check(directory)
        assert str(victim) in str(err.value)
    assert snapshot(directory) == before  # checking wrote and deleted nothing


def rewrite(victim, manifest, directory, arrays):
    """Writes new content and updates the checksum, so the content check must fire."""
    with open(victim, "wb") as f:
        np.savez(f, **arrays)
    manifest["episodes"][1]["sha256"] = sha256_file(victim)
    atomic_write_json(directory / "manifest.json", manifest)


def load(victim):
    with np.load(victim, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_truncated_file(copy):
    def damage(victim, manifest):
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])

    damage_and_check(copy, damage, "checksum|truncated|not a readable")


def test_truncated_file_without_checksum(copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    victim = copy / manifest["episodes"][1]["file"]
    victim.write_bytes(victim.read_bytes()[:-1000])
    with pytest.raises(DatasetError, match="truncated|not a readable") as err:
        Dataset(copy, checksum=False)
    assert str(victim) in str(err.value)


def test_checksum_mismatch(copy):
    def damage(victim, manifest):
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte in the pixels
        victim.write_bytes(bytes(data))

    damage_and_check(copy, damage, "checksum mismatch")


def test_wrong_key(copy):
    def damage(victim, manifest):
        arrays = load(victim)
        arrays["observation"] = arrays.pop("image")
        rewrite(victim, manifest, copy, arrays)

    damage_and_check(copy, damage, "missing key.*image")


def test_shape_mismatch(copy):
    def damage(victim, manifest):
        arrays = load(victim)
        arrays["reward"] = arrays["reward"][:-1]
        rewrite(victim, manifest, copy, arrays)

    damage_and_check(copy, damage, "'reward' has shape")


def test_action_dim_differs_from_rest(copy):
    def damage(victim, manifest):
        arrays = load(victim)
        arrays["action"] = np.zeros((len(arrays["action"]), 6), np.float32)
        rewrite(victim, manifest, copy, arrays)

    damage_and_check(copy, damage, "differs from the rest")


def test_missing_file(copy):
    def damage(victim, manifest):
        victim.unlink()

    damage_and_check(copy, damage, "missing")
