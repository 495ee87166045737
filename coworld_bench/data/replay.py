"""Online experience: an env driver and a growing replay of episodes.

Online agents (DreamerV2 pretraining on a source, the dataset behaviour agent) step
a real env and learn from a replay that grows episode by episode. Finished episodes
are kept in memory for sampling and, when a directory is given, written to disk in
the dataset format (atomically), so the replay survives a restart and doubles as a
dataset. Sequences are sampled as ``SequenceSampler`` does: starts uniform over the
valid start rows of all episodes, never crossing an episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from coworld_bench.data.format import EpisodeFile, episode_name, write_episode

KEYS = ("image", "state", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


class Replay:
    def __init__(self, directory: Path | None = None, capacity_steps: int = 2_000_000):
        self.directory = Path(directory) if directory else None
        self.capacity = capacity_steps
        self.episodes: list[dict[str, np.ndarray]] = []
        self.returns: list[float] = []
        self.total_episodes = 0  # ever added (kept ones are the newest)
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def num_steps(self) -> int:
        return sum(len(e["reward"]) - 1 for e in self.episodes)

    def add(self, episode: dict[str, np.ndarray]) -> None:
        if self.directory:
            write_episode(self.directory / episode_name(self.total_episodes,
                                                        len(episode["reward"]) - 1), episode)
        self.episodes.append(episode)
        self.returns.append(float(episode["reward"].sum()))
        self.total_episodes += 1
        while self.num_steps > self.capacity and len(self.episodes) > 1:
            self.episodes.pop(0)

    def reload(self, count: int) -> None:
        """Restores the first ``count`` episodes written to the directory (resume)."""
        self.episodes, self.returns, self.total_episodes = [], [], 0
        files = sorted(self.directory.glob("ep*.npz"))
        for path in files[count:]:  # written after the checkpoint: redone
            path.unlink()
        directory, self.directory = self.directory, None
        try:
            for path in files[:count]:
                episode = EpisodeFile(path)
                self.add(episode.read_all())
                episode.close()
        finally:
            self.directory = directory

    def sample(self, rng: np.random.Generator, batch: int, length: int) -> dict[str, np.ndarray]:
        rows = np.array([len(e["reward"]) for e in self.episodes])
        starts = np.maximum(rows - length + 1, 0)
        if starts.sum() == 0:
            raise ValueError(f"The replay holds no episode of {length} rows yet.")
        cum = np.cumsum(starts)
        flat = rng.integers(0, cum[-1], size=batch)
        index = np.searchsorted(cum, flat, side="right")
        start = flat - np.concatenate([[0], cum[:-1]])[index]
        keys = [k for k in KEYS if k in self.episodes[0]]
        return {k: np.stack([self.episodes[i][k][s:s + length] for i, s in zip(index, start)])
                for k in keys}


class Driver:
    """Steps one env with a policy and hands finished episodes to a callback.

    The episode in progress is not part of any checkpoint: after a restart the
    driver begins a fresh episode, seeded by the number of episodes so far.
    """

    def __init__(self, env, seed: int, on_episode: Callable[[dict], None]):
        self.env = env
        self.seed = seed
        self.on_episode = on_episode
        self.episodes = 0
        self.obs = None
        self.rows: dict[str, list] | None = None
        self.policy_state = None

    def _start(self):
        seed = int(np.random.SeedSequence([self.seed, 2024, self.episodes]).generate_state(1)[0])
        self.obs, _ = self.env.reset(seed=seed)
        dim = self.env.action_space.shape[0]
        self.rows = {k: [] for k in KEYS}
        self._add(self.obs, np.zeros(dim, np.float32), 0.0, 1.0)
        self.policy_state = None

    def _add(self, obs, action, reward, discount):
        self.rows["image"].append(obs["image"])
        self.rows["state"].append(obs["state"])
        self.rows["action"].append(np.asarray(action, np.float32))
        self.rows["reward"].append(np.float32(reward))
        self.rows["discount"].append(np.float32(discount))
        for k in ("is_first", "is_last", "is_terminal"):
            self.rows[k].append(bool(obs[k]))

    def step(self, policy: Callable, steps: int) -> None:
        """``policy(obs, state) -> (action, state)``; runs ``steps`` env steps."""
        for _ in range(steps):
            if self.obs is None:
                self._start()
            action, self.policy_state = policy(self.obs, self.policy_state)
            action = np.clip(np.asarray(action, np.float32), -1, 1)
            self.obs, reward, terminated, truncated, _ = self.env.step(action)
            self._add(self.obs, action, reward, 0.0 if terminated else 1.0)
            if terminated or truncated:
                episode = {k: np.asarray(v) for k, v in self.rows.items()}
                episode["state"] = episode["state"].astype(np.float32)
                self.episodes += 1
                self.obs = None
                self.on_episode(episode)
