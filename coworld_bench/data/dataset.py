"""Reading a dataset directory: manifest, verification, lazy episode access."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench.data.format import (
    FORMAT_VERSION, MANIFEST, DatasetError, EpisodeFile, check_episode_file,
)

__all__ = ["Dataset", "default_root", "partial_reason", "read_manifest", "verify_dataset"]


def default_root() -> Path:
    """``$COWORLD_BENCH_DATA``, else ``$XDG_CACHE_HOME/coworld-bench/datasets``
    (``~/.cache/coworld-bench/datasets``)."""
    if os.environ.get("COWORLD_BENCH_DATA"):
        return Path(os.environ["COWORLD_BENCH_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "coworld-bench" / "datasets"


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise DatasetError(f"{directory}: no {MANIFEST}; not a coworld-bench dataset "
                           "(import foreign episodes with `coworld-bench data import`).")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e}).") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(f"{path}: format version {version!r}, this coworld-bench reads "
                           f"version {FORMAT_VERSION}.")
    for key in ("task_id", "episodes", "env"):
        if key not in manifest:
            raise DatasetError(f"{path}: missing field {key!r}.")
    from coworld_bench.data.collection import superseded

    if (reason := superseded(manifest)) is not None:
        raise DatasetError(f"{directory}: {reason}. Delete the folder; a run that needs it "
                           "(or `coworld-bench data collect`) makes it anew.")
    return manifest


def partial_reason(directory: Path, manifest: dict[str, Any]) -> str | None:
    """Why a dataset may not be learned from yet (its collection was interrupted, or is
    running), or None when it is complete."""
    if manifest.get("status", "complete") == "complete":
        return None
    return (f"{directory}: the dataset is partial ({manifest.get('episode_count', 0)} episodes "
            f"of at most {manifest.get('episode_budget', '?')}): its collection was "
            "interrupted or is still running. A run that needs it resumes the collection "
            "itself; `coworld-bench data collect` with the same arguments resumes it too.")


def verify_dataset(directory: Path, checksum: bool = True) -> dict[str, Any]:
    """Checks every episode listed in the manifest; raises naming the first bad file,
    or saying the dataset is partial (only a complete dataset is ever learned from)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if (reason := partial_reason(directory, manifest)) is not None:
        raise DatasetError(reason)
    image_shape = action_dim = None
    for entry in manifest["episodes"]:
        path = directory / entry["file"]
        check_episode_file(path, entry, checksum=checksum)
        episode = EpisodeFile(path)
        shapes = (episode.shape("image")[1:], episode.shape("action")[1])
        episode.close()
        if image_shape is None:
            image_shape, action_dim = shapes
        elif shapes != (image_shape, action_dim):
            raise DatasetError(f"{path}: image/action shape {shapes} differs from the rest of the "
                               f"dataset {(image_shape, action_dim)}.")
    total = sum(e["steps"] for e in manifest["episodes"])
    if manifest.get("step_count", total) != total:
        raise DatasetError(f"{directory / MANIFEST}: step_count {manifest['step_count']} but the "
                           f"episodes hold {total} steps.")
    return manifest


class Dataset:
    """An offline dataset on disk, read lazily.

    Opening checks every episode file against the manifest (sha256 and layout;
    pass ``checksum=False`` to check layout only). Episodes are read row-range by
    row-range, so a dataset larger than memory can be sampled.
    """

    def __init__(self, directory: str | Path, checksum: bool = True):
        self.directory = Path(directory)
        self.manifest = verify_dataset(self.directory, checksum=checksum)
        self.episodes = [EpisodeFile(self.directory / e["file"]) for e in self.manifest["episodes"]]
        if not self.episodes:
            raise DatasetError(f"{self.directory}: the dataset holds no episodes.")
        self.lengths = np.array([e.steps for e in self.episodes], dtype=np.int64)

    @property
    def task_id(self) -> str:
        return self.manifest["task_id"]

    @property
    def env_options(self) -> dict[str, Any]:
        return self.manifest["env"]

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.episodes[0].shape("image")[1:]

    @property
    def action_dim(self) -> int:
        return self.episodes[0].shape("action")[1]

    @property
    def keys(self) -> list[str]:
        return list(self.episodes[0].arrays)

    def __len__(self) -> int:
        return len(self.episodes)

    def load_episode(self, index: int) -> dict[str, np.ndarray]:
        return self.episodes[index].read_all()

    def read(self, index: int, key: str, start: int, stop: int) -> np.ndarray:
        return self.episodes[index].read(key, start, stop)

    def close(self) -> None:
        for episode in self.episodes:
            episode.close()
