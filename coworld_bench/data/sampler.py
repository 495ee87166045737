"""Sampling batches from a dataset on disk.

Sampling rules:

- ``SequenceSampler`` (model-based algorithms) draws ``(batch, length)`` sequences of
  consecutive rows. The start is uniform over every valid start row of every
  episode: row ``s`` of an episode with ``T+1`` rows is valid when
  ``s + length <= T+1``. A sequence therefore never crosses an episode boundary,
  and episodes shorter than the sequence are never drawn. ``is_first`` is returned
  exactly as stored (True on an episode's reset row only); a model starts its
  recurrent state afresh at the start of every sampled sequence.
- ``TransitionSampler`` (model-free algorithms) draws transitions uniformly over
  every step of every episode. Step ``t`` goes from row ``t`` to row ``t+1`` with
  ``action[t+1]``. With n-step returns, ``m = min(n, T - t)`` rows are used:
  ``reward = sum_{k<m} gamma^k reward[t+1+k]`` and
  ``discount = gamma^m * prod_{k<=m} discount[t+k]``, ``next_image`` ends at row
  ``t+m``. Frame stacks repeat the reset frame before an episode's start.
"""

from __future__ import annotations

import numpy as np

from coworld_bench.data.dataset import Dataset
from coworld_bench.data.format import DatasetError

__all__ = ["SequenceSampler", "TransitionSampler"]


class SequenceSampler:
    def __init__(self, dataset: Dataset, batch_size: int, length: int, seed: int = 0,
                 keys: list[str] | None = None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.length = length
        self.keys = list(keys or dataset.keys)
        self.rng = np.random.default_rng(seed)
        starts = np.maximum(dataset.lengths + 1 - length + 1, 0)  # valid starts per episode
        if starts.sum() == 0:
            raise DatasetError(f"{dataset.directory}: no episode has {length} rows; the longest "
                               f"has {dataset.lengths.max() + 1}.")
        self._cum = np.cumsum(starts)
        self._templates = {k: dataset.episodes[0].arrays[k] for k in self.keys}

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        flat = self.rng.integers(0, self._cum[-1], size=self.batch_size)
        episode = np.searchsorted(self._cum, flat, side="right")
        start = flat - np.concatenate([[0], self._cum[:-1]])[episode]
        return episode, start

    def sample(self, indices: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """A batch; ``indices`` = (episodes, start rows) to read given sequences."""
        episode, start = self.sample_indices() if indices is None else indices
        batch = {k: np.empty((self.batch_size, self.length, *shape[1:]), dtype)
                 for k, (_, dtype, shape) in self._templates.items()}
        for b, (e, s) in enumerate(zip(episode, start)):
            source = self.dataset.episodes[e]
            for key in self.keys:
                batch[key][b] = source.read(key, s, s + self.length)
        return batch

    def __iter__(self):
        while True:
            yield self.sample()


class TransitionSampler:
    def __init__(self, dataset: Dataset, batch_size: int, n_step: int = 1, frame_stack: int = 1,
                 discount: float = 0.99, seed: int = 0):
        if n_step < 1 or frame_stack < 1:
            raise ValueError("n_step and frame_stack must be >= 1.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.n_step = n_step
        self.frame_stack = frame_stack
        self.gamma = discount
        self.rng = np.random.default_rng(seed)
        self._cum = np.cumsum(dataset.lengths)
        self._has_state = "state" in dataset.keys

    def _stack(self, frames: np.ndarray, last: int, first_row: int) -> np.ndarray:
        """Frames ending at row ``last`` (clamped at row 0), channels first."""
        rows = np.clip(np.arange(last - self.frame_stack + 1, last + 1), 0, None) - first_row
        stacked = frames[rows]  # (k, H, W, 3)
        return stacked.transpose(0, 3, 1, 2).reshape(-1, *stacked.shape[1:3])

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        flat = self.rng.integers(0, self._cum[-1], size=self.batch_size)
        episodes = np.searchsorted(self._cum, flat, side="right")
        return episodes, flat - np.concatenate([[0], self._cum[:-1]])[episodes]

    def sample(self, indices: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """A batch; ``indices`` = (episodes, steps) to read given transitions."""
        episodes, steps = self.sample_indices() if indices is None else indices
        out = {k: [] for k in ("image", "action", "reward", "discount", "next_image")}
        if self._has_state:
            out["state"], out["next_state"] = [], []
        for e, t in zip(episodes, steps):
            source = self.dataset.episodes[e]
            m = int(min(self.n_step, self.dataset.lengths[e] - t))
            first_row = max(0, t - self.frame_stack + 1)
            frames = source.read("image", first_row, t + m + 1)
            rewards = source.read("reward", t + 1, t + m + 1)
            discounts = source.read("discount", t + 1, t + m + 1)
            alive = np.concatenate([[1.0], np.cumprod(discounts)[:-1]])
            powers = self.gamma ** np.arange(m)
            out["reward"].append(np.sum(powers * alive * rewards))
            out["discount"].append(self.gamma ** m * np.prod(discounts))
            out["action"].append(source.read("action", t + 1, t + 2)[0])
            out["image"].append(self._stack(frames, t, first_row))
            out["next_image"].append(self._stack(frames, t + m, first_row))
            if self._has_state:
                out["state"].append(source.read("state", t, t + 1)[0])
                out["next_state"].append(source.read("state", t + m, t + m + 1)[0])
        batch = {k: np.stack(v) for k, v in out.items()}
        batch["reward"] = batch["reward"].astype(np.float32)
        batch["discount"] = batch["discount"].astype(np.float32)
        return batch

    def __iter__(self):
        while True:
            yield self.sample()
