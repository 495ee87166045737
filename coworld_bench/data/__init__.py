"""Offline datasets: on-disk format, collection, import and sampling.

    >>> from coworld_bench.data import Dataset, SequenceSampler
    >>> ds = Dataset("path/to/dataset")            # verifies every file
    >>> batch = SequenceSampler(ds, batch_size=50, length=50).sample()
    >>> batch["image"].shape
    (50, 50, 64, 64, 3)
"""

from coworld_bench.data.collection import QUALITIES, CollectConfig, collect
from coworld_bench.data.dataset import (
    Dataset, default_root, partial_reason, read_manifest, verify_dataset,
)
from coworld_bench.data.format import DatasetError, EpisodeFile, write_episode
from coworld_bench.data.importer import import_dataset
from coworld_bench.data.recipes import load_recipe
from coworld_bench.data.sampler import SequenceSampler, TransitionSampler

__all__ = [
    "QUALITIES", "CollectConfig", "collect", "Dataset", "default_root", "read_manifest",
    "verify_dataset", "partial_reason", "DatasetError", "EpisodeFile", "write_episode", "import_dataset",
    "load_recipe", "SequenceSampler", "TransitionSampler",
]
