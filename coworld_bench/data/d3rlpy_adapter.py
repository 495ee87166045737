"""A benchmark dataset as a d3rlpy dataset (``d3rlpy.dataset.ReplayBuffer``).

d3rlpy (takuseno/d3rlpy, ``d3rlpy/dataset/``) stores an episode of N rows as
``observations[i]``, ``actions[i]``, ``rewards[i]`` where ``actions[i]`` is taken
at ``observations[i]`` and earns ``rewards[i]``; a transition picker turns
(episode, index) into a ``Transition`` and ``TransitionMiniBatch.from_transitions``
batches them. Our episodes (SPEC section 3) have T+1 rows with ``action[t]`` leading
to ``image[t]``, so step t of an episode, as ``TransitionSampler`` reads it with
n_step 1, goes from ``image[t]`` with ``action[t+1]`` and ``reward[t+1]`` to
``image[t+1]``, terminal when ``is_terminal[t+1]``.

``FrameEpisode`` holds one episode in d3rlpy's row layout: the T+1 single frames
(channels first, uint8; frames are stacked only when a transition is picked), the
actions and rewards shifted by one row (row t = ``action[t+1]``, padded with zeros
to the run's action dimension; row T is a zero row that no transition uses), and
``terminated`` = ``is_terminal`` of the last row. It always has T transitions: unlike
d3rlpy's own ``Episode``, which drops the frame after a terminal step and gives the
terminal transition an all-zero next observation, the frame is kept, as our sampler
returns it (its value is masked by the terminal flag either way). An episode that
ended by time limit is a d3rlpy "timeout" episode (``terminated`` False).

``RepeatFirstFrameStackPicker`` stacks k frames the way ``TransitionSampler`` does:
the reset frame repeated before the episode's start. d3rlpy's
``FrameStackTransitionPicker`` pads with zero frames there instead, which a pixel
policy never sees at evaluation time (``baselines.core.nets.FrameStack`` repeats).

    >>> buffer = to_replay_buffer(Dataset("path/to/dataset"), frame_stack=3, action_dim=6)
    >>> batch = transition_batch(buffer, episodes=[0, 1], steps=[0, 499])
    >>> batch.observations.shape                 # float32 pixel values, as d3rlpy batches
    (2, 9, 64, 64)

d3rlpy is imported only inside these functions, so ``import coworld_bench`` never
needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any, Sequence

import numpy as np

from coworld_bench.data.dataset import Dataset

__all__ = ["import_d3rlpy", "FrameEpisode", "RepeatFirstFrameStackPicker", "episode_from_dataset",
           "to_replay_buffer", "transition_batch"]


def import_d3rlpy():
    """The d3rlpy module, imported quietly: the notice that ``gym`` prints on import
    (d3rlpy imports it) is swallowed, and d3rlpy's structlog logger is limited to
    warnings (its info lines go to stdout). d3rlpy writes log files only from
    ``fit``/``fit_online``, which nothing here calls."""
    import logging
    import sys

    first = "d3rlpy" not in sys.modules
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        import d3rlpy
    if first:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


@dataclasses.dataclass(frozen=True)
class FrameEpisode:
    """One episode in d3rlpy's row layout with all T+1 frames (d3rlpy's
    ``EpisodeBase`` protocol).

    Attributes:
      observations: (T+1, 3, H, W) uint8 single frames, channels first.
      actions: (T+1, A) float32; row t is the action taken at frame t; row T is zeros.
      rewards: (T+1, 1) float32; row t is the reward of step t; row T is zero.
      terminated: the episode really ended (``is_terminal`` of its last row).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def observation_signature(self):
        from d3rlpy.dataset import Signature

        return Signature(dtype=[self.observations.dtype], shape=[self.observations.shape[1:]])

    @property
    def action_signature(self):
        from d3rlpy.dataset import Signature

        return Signature(dtype=[self.actions.dtype], shape=[self.actions.shape[1:]])

    @property
    def reward_signature(self):
        from d3rlpy.dataset import Signature

        return Signature(dtype=[self.rewards.dtype], shape=[self.rewards.shape[1:]])

    def size(self) -> int:
        return int(self.actions.shape[0])

    def __len__(self) -> int:
        return self.size()

    @property
    def transition_count(self) -> int:
        """T: frame t -> frame t+1 for every step, terminal or not."""
        return self.size() - 1

    def compute_return(self) -> float:
        return float(np.sum(self.rewards))

    def serialize(self) -> dict[str, Any]:
        return {"observations": self.observations, "actions": self.actions,
                "rewards": self.rewards, "terminated": self.terminated}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> "FrameEpisode":
        return cls(observations=data["observations"], actions=data["actions"],
                   rewards=data["rewards"], terminated=bool(data["terminated"]))


class RepeatFirstFrameStackPicker:
    """d3rlpy transition picker for ``FrameEpisode``: the observation of step t is
    frames t-k+1..t stacked along channels (oldest first, row indices clamped at the
    reset frame, as ``TransitionSampler._stack``), the next observation the same at
    t+1; ``terminal`` is 1 on the last step of a terminated episode."""

    def __init__(self, n_frames: int):
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1.")
        self.n_frames = n_frames

    def stack(self, episode: FrameEpisode, row: int) -> np.ndarray:
        rows = np.clip(np.arange(row - self.n_frames + 1, row + 1), 0, None)
        frames = episode.observations[rows]  # (k, 3, H, W)
        return frames.reshape(-1, *frames.shape[2:])

    def __call__(self, episode: FrameEpisode, index: int):
        from d3rlpy.dataset import Transition

        last = episode.transition_count - 1
        if not 0 <= index <= last:
            raise IndexError(f"step {index} of an episode of {last + 1} steps.")
        return Transition(
            observation=self.stack(episode, index),
            action=episode.actions[index],
            reward=episode.rewards[index],
            next_observation=self.stack(episode, index + 1),
            next_action=episode.actions[index + 1],
            terminal=float(episode.terminated and index == last),
            interval=1,
            rewards_to_go=episode.rewards[index:last + 1],
        )


def episode_from_dataset(dataset: Dataset, index: int, action_dim: int | None = None
                         ) -> FrameEpisode:
    """Episode ``index`` of ``dataset`` read into memory as a ``FrameEpisode``,
    actions zero-padded to ``action_dim`` (default: the dataset's)."""
    source = dataset.episodes[index]
    images = source.read("image")
    actions = source.read("action")[1:]
    action_dim = actions.shape[1] if action_dim is None else action_dim
    if action_dim < actions.shape[1]:
        raise ValueError(f"action_dim {action_dim} is smaller than the dataset's "
                         f"{actions.shape[1]}.")
    rows = np.zeros((len(images), action_dim), np.float32)
    rows[:-1, :actions.shape[1]] = actions
    rewards = np.zeros((len(images), 1), np.float32)
    rewards[:-1, 0] = source.read("reward")[1:]
    return FrameEpisode(observations=np.ascontiguousarray(images.transpose(0, 3, 1, 2)),
                        actions=rows, rewards=rewards,
                        terminated=bool(source.read("is_terminal")[-1]))


def to_replay_buffer(dataset: Dataset, frame_stack: int, action_dim: int | None = None):
    """The dataset as a d3rlpy ``ReplayBuffer`` of ``FrameEpisode``s (in dataset
    order, ``buffer.episodes[i]`` is episode i) whose transition picker is a
    ``RepeatFirstFrameStackPicker(frame_stack)``. Every frame is held in memory once
    (64x64 RGB: 12 KiB a frame, 1.2 GB for 100k frames)."""
    d3rlpy = import_d3rlpy()
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

    episodes = [episode_from_dataset(dataset, i, action_dim) for i in range(len(dataset))]
    first = episodes[0]
    return ReplayBuffer(
        InfiniteBuffer(), transition_picker=RepeatFirstFrameStackPicker(frame_stack),
        episodes=episodes, observation_signature=first.observation_signature,
        action_signature=first.action_signature, reward_signature=first.reward_signature,
        action_space=d3rlpy.ActionSpace.CONTINUOUS, action_size=first.actions.shape[1])


def transition_batch(buffer, episodes: Sequence[int], steps: Sequence[int]):
    """d3rlpy's ``TransitionMiniBatch`` of the given (episode, step) pairs, picked by
    the buffer's transition picker (the indices ``TransitionSampler.sample_indices``
    draws)."""
    from d3rlpy.dataset import TransitionMiniBatch

    pick = buffer.transition_picker
    return TransitionMiniBatch.from_transitions(
        [pick(buffer.episodes[int(e)], int(t)) for e, t in zip(episodes, steps)])
