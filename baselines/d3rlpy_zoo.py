"""d3rlpy's offline RL algorithms, run by the benchmark's runner: CQL, TD3+BC, IQL and
BC exactly as d3rlpy 2.8 implements them (takuseno/d3rlpy, ``d3rlpy/algos/qlearning/``
``cql.py``, ``td3_plus_bc.py``, ``iql.py``, ``bc.py`` and their ``torch/*_impl.py``).

What is d3rlpy's and what is ours:

- The networks, losses and optimiser steps are d3rlpy's: each update is
  ``algo.update(batch)`` on a ``d3rlpy.dataset.TransitionMiniBatch``, which runs
  d3rlpy's ``impl.update`` and advances d3rlpy's gradient-step counter (TD3+BC's
  delayed actor update reads it).
- The batch is ours: indices are drawn by ``TransitionSampler.sample_indices``
  (uniform over every step of every episode, our seeded numpy generator), and the
  transitions are picked by ``coworld_bench.data.d3rlpy_adapter`` (frame stacks that
  repeat the reset frame, actions padded to the run's action dimension), so a run is
  deterministic and resumes bit-exactly. d3rlpy's own ``fit`` is never called (it
  would sample with numpy's global generator and write ``d3rlpy_logs/``).
- Observations are k stacked 64x64 RGB frames, (3k, 64, 64) uint8, scaled by d3rlpy's
  pixel observation scaler (x / 255). Actions are not scaled: data actions already
  lie in [-1, 1], d3rlpy's squashed policies output that range.
- Evaluation: ``policy`` stacks frames with ``baselines.core.nets.FrameStack`` and takes
  ``algo.predict`` (d3rlpy's greedy action: the tanh of the policy mean), also when
  asked for a stochastic action. ``value`` is ``algo.predict_value`` of the stacked
  observation and that action: the mean over d3rlpy's critic ensemble (BC has none).
- Seeds: the networks are initialised after ``torch.manual_seed`` of a seed derived
  from the run's seed. d3rlpy draws its noise (TD3's target smoothing, CQL's and
  SAC's action samples) from torch's global generator, so its state travels in the
  checkpoint along with our index sampler's.

Paper preset = d3rlpy's own reproduction script for the algorithm
(``reproductions/offline/<name>.py`` of d3rlpy 2.x, SPEC section 7b) where one exists,
else d3rlpy's defaults (its config dataclasses). The scripts are written for D4RL's
state-based locomotion; what they set about states (a vector encoder, a standard
observation scaler) is replaced by d3rlpy's pixel encoder and pixel scaler, and their
length (500k updates) by the paper's 300k:

- TD3+BC (``td3_plus_bc.py``, which sets d3rlpy's defaults): actor and critic lr
  3e-4, batch 256, alpha 2.5 (lambda = alpha / mean|Q1|), tau 0.005, 2 critics,
  target smoothing sigma 0.2 clipped at 0.5, actor every 2nd update.
- CQL (``cql.py``, its fixed-alpha form: ``alpha_learning_rate=0.0``): actor lr 1e-4,
  critic lr 3e-4, temperature lr 1e-4 (initial 1.0), the conservative multiplier alpha
  fixed at 1.0, conservative weight 5.0 (the script's value for every dataset but
  D4RL's ``medium-v0``, which takes 10: no dataset here is one), 10 action samples,
  batch 256, tau 0.005, 2 critics, deterministic backup. (A later revision of the
  script learns alpha, lr 3e-4 from e with threshold 10, on a [256, 256] encoder:
  ``--set alpha_lr=3e-4 alpha=2.718281828 alpha_threshold=10`` runs that form.)
- IQL (``iql.py``): actor and critic lr 3e-4, batch 256, expectile 0.7, inverse
  temperature (weight_temp) 3.0, advantage weights clipped at 100, tau 0.005, 2
  critics; rewards scaled by d3rlpy's ``ReturnBasedRewardScaler(multiplier=1000)``
  (r' = 1000 r / (max - min episode return of the dataset), fitted here on the run's
  dataset as d3rlpy's ``fit`` would) and the actor's learning rate on d3rlpy's
  ``CosineAnnealingLRFactory`` over the whole run (the script's T_max is its length).
  ``value`` reports Q in the dataset's reward units (the scaling undone).
- BC (no script; d3rlpy's defaults): lr 1e-3, batch 100, deterministic policy, MSE.
- All: Adam, discount 0.99, d3rlpy's default pixel encoder (``PixelEncoderFactory``:
  Nature-DQN convolutions 32x8x4, 64x4x2, 64x3x1, then a 512-unit linear layer, ReLU;
  every network has its own encoder, as in d3rlpy), frame stack 3, 300k updates.

Smaller presets change sizes only: smoke = batch 8, frame stack 2, encoder "small"
(16x8x4, 32x4x2) with 32 features (CQL: 2 action samples); quick = batch 32, encoder
"small" with 128 features (CQL: 2 action samples: d3rlpy's CQL encodes the observation
again for every sampled action, 3 x n_action_samples extra encodings per critic, so
it is the slowest of the four by far).

Units: ``train_steps`` counts updates (d3rlpy's gradient steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from baselines.core.nets import FrameStack
from coworld_bench.algorithm import Algorithm, Choice, Range, RunContext, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.data.d3rlpy_adapter import import_d3rlpy, to_replay_buffer, transition_batch
from coworld_bench.errors import ConfigError
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates, derive_seed

# Convolutions (filters, kernel, stride) of d3rlpy's PixelEncoderFactory by name.
ENCODER_FILTERS = {
    "nature": [[32, 8, 4], [64, 4, 2], [64, 3, 1]],  # d3rlpy's default
    "small": [[16, 8, 4], [32, 4, 2]],
}
_INIT_STREAM = 0xD3  # derive_seed(seed, _INIT_STREAM) seeds the network initialisation


@dataclasses.dataclass
class D3rlpyConfig(TrainConfig):
    """Settings shared by the d3rlpy algorithms.

    Attributes:
      batch_size: transitions per update.
      frame_stack: frames per observation (the reset frame repeated at an episode's
        start).
      encoder: convolutions of d3rlpy's pixel encoder: nature = d3rlpy's default
        (32x8x4, 64x4x2, 64x3x1), small = 16x8x4, 32x4x2.
      encoder_feature_size: units of the pixel encoder's last linear layer.
    """

    train_steps: int = 300_000
    batch_size: int = 256
    frame_stack: int = 3
    encoder: str = "nature"
    encoder_feature_size: int = 512

    checks: ClassVar[dict] = {"batch_size": Range(1), "frame_stack": Range(1, 16),
                              "encoder": Choice(tuple(ENCODER_FILTERS)),
                              "encoder_feature_size": Range(1)}


@dataclasses.dataclass
class D3TD3BCConfig(D3rlpyConfig):
    """TD3+BC (d3rlpy ``TD3PlusBCConfig``).

    Attributes:
      actor_lr: Adam learning rate of the actor.
      critic_lr: Adam learning rate of the critics.
      alpha: the BC trade-off; the actor loss is -lambda * mean Q1(s, pi(s)) +
        mean (pi(s) - a)^2 with lambda = alpha / mean|Q1(s, pi(s))| (not
        differentiated).
    """

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha: float = 2.5

    checks: ClassVar[dict] = {"actor_lr": Range(0), "critic_lr": Range(0), "alpha": Range(0)}


@dataclasses.dataclass
class D3CQLConfig(D3rlpyConfig):
    """CQL for continuous actions (d3rlpy ``CQLConfig``; defaults: d3rlpy's
    ``reproductions/offline/cql.py``).

    Attributes:
      actor_lr: Adam learning rate of the actor.
      critic_lr: Adam learning rate of the critics.
      temp_lr: learning rate of SAC's entropy temperature (0: fixed at 1).
      alpha: initial value of the conservative-loss multiplier alpha (1.0).
      alpha_lr: learning rate of alpha as a Lagrange multiplier driving the
        conservative gap towards alpha_threshold (0: alpha stays fixed, the script's).
      alpha_threshold: the target of the conservative gap (d3rlpy's tau; a constant
        offset of the loss while alpha is fixed).
      conservative_weight: scale of the conservative term
        weight * (logsumexp Q - Q(s, a_data) - threshold) (the script: 5.0; 10.0 on
        D4RL's medium-v0 datasets).
      n_action_samples: actions sampled per distribution (uniform, pi(s), pi(s')) in
        the logsumexp.
    """

    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temp_lr: float = 1e-4
    alpha: float = 1.0
    alpha_lr: float = 0.0
    alpha_threshold: float = 10.0
    conservative_weight: float = 5.0
    n_action_samples: int = 10

    checks: ClassVar[dict] = {"actor_lr": Range(0), "critic_lr": Range(0), "temp_lr": Range(0),
                              "alpha": Range(1e-8), "alpha_lr": Range(0),
                              "alpha_threshold": Range(), "conservative_weight": Range(0),
                              "n_action_samples": Range(1)}


@dataclasses.dataclass
class D3IQLConfig(D3rlpyConfig):
    """IQL (d3rlpy ``IQLConfig``; defaults: d3rlpy's ``reproductions/offline/iql.py``).

    Attributes:
      actor_lr: Adam learning rate of the actor.
      critic_lr: Adam learning rate of the critics and the value function.
      expectile: the expectile tau of the value loss |tau - 1(u < 0)| u^2.
      weight_temp: inverse temperature beta of the advantage weights exp(beta * A).
      max_weight: the advantage weights are clipped at this value.
      reward_multiplier: rewards are scaled to multiplier * r / (max - min episode
        return of the dataset) (d3rlpy's ReturnBasedRewardScaler; 1000; 0: unscaled).
      actor_cosine: the actor's learning rate follows a cosine from actor_lr to 0
        over train_steps (d3rlpy's CosineAnnealingLRFactory; false: constant).
    """

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    expectile: float = 0.7
    weight_temp: float = 3.0
    max_weight: float = 100.0
    reward_multiplier: float = 1000.0
    actor_cosine: bool = True

    checks: ClassVar[dict] = {"actor_lr": Range(0), "critic_lr": Range(0),
                              "expectile": Range(0, 1), "weight_temp": Range(0),
                              "max_weight": Range(0), "reward_multiplier": Range(0)}


@dataclasses.dataclass
class D3BCConfig(D3rlpyConfig):
    """Behaviour cloning (d3rlpy ``BCConfig``, deterministic policy, MSE).

    Attributes:
      lr: Adam learning rate.
    """

    batch_size: int = 100
    lr: float = 1e-3

    checks: ClassVar[dict] = {"lr": Range(0)}


class D3rlpyAlgorithm(Algorithm):
    """A d3rlpy algorithm trained on our batches; subclasses name the d3rlpy config."""

    family = "model-free"
    has_value = True
    presets = {
        "smoke": dict(batch_size=8, frame_stack=2, encoder="small", encoder_feature_size=32),
        "quick": dict(batch_size=32, encoder="small", encoder_feature_size=128),
    }

    def d3rlpy_config(self, d3rlpy, encoder, scaler):
        """d3rlpy's config of the algorithm (``encoder``: its encoder factory,
        ``scaler``: the pixel observation scaler)."""
        raise NotImplementedError

    def __init__(self, config: D3rlpyConfig, ctx: RunContext):
        super().__init__(config, ctx)
        d3rlpy = import_d3rlpy()
        h, w, c = ctx.image_shape
        self.buffer = to_replay_buffer(ctx.dataset, config.frame_stack, ctx.action_dim)
        # Only its index stream is used: the same uniform draw over steps.
        self.indices = TransitionSampler(ctx.dataset, config.batch_size,
                                         frame_stack=config.frame_stack, seed=ctx.seed)
        encoder = d3rlpy.models.PixelEncoderFactory(
            filters=[list(f) for f in ENCODER_FILTERS[config.encoder]],
            feature_size=config.encoder_feature_size)
        scaler = d3rlpy.preprocessing.PixelObservationScaler()
        device = torch.device(ctx.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        torch.manual_seed(derive_seed(ctx.seed, _INIT_STREAM))
        self.algo = self.d3rlpy_config(d3rlpy, encoder, scaler).create(device=str(device))
        self.algo.create_impl((c * config.frame_stack, h, w), ctx.action_dim)
        # Every nn.Module and optimiser d3rlpy checkpoints (networks, target networks,
        # temperature and alpha parameters, their optimisers), by d3rlpy's names.
        self.parts = self.algo.impl.modules.create_checkpointer(str(device)).modules
        generators = dict(sampler=self.indices.rng, torch=torch.default_generator)
        if device.type == "cuda":
            generators["torch_cuda"] = torch.cuda.default_generators[device.index]
        self.rngs = RandomStates(**generators)

    def train_step(self, step: int) -> dict[str, float]:
        episodes, steps = self.indices.sample_indices()
        losses = self.algo.update(transition_batch(self.buffer, episodes, steps))
        return {k: float(v) for k, v in losses.items()}

    def _stacked(self, state) -> np.ndarray:
        return np.concatenate(state)[None]

    def policy(self, obs, state, deterministic=True):
        state = FrameStack.update(state, obs["image"], self.config.frame_stack, obs["is_first"])
        return self.algo.predict(self._stacked(state))[0], state

    def value(self, obs, state):
        """Mean over d3rlpy's critic ensemble of Q(stacked frames, greedy action)."""
        x = self._stacked(state)
        value = self.algo.predict_value(x, self.algo.predict(x))
        scaler = self.algo.config.reward_scaler
        if scaler is not None:  # Q of scaled rewards: back to the dataset's units
            value = scaler.reverse_transform_numpy(value)
        return float(value[0])

    def state_dict(self) -> dict[str, Any]:
        return {"modules": {name: part.state_dict() for name, part in self.parts.items()},
                "grad_step": self.algo.grad_step, "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state["modules"][name])
        self.algo.set_grad_step(int(state["grad_step"]))
        self.rngs.load_state_dict(state["rngs"])


@register("d3rlpy-td3bc")
class D3TD3BC(D3rlpyAlgorithm):
    Config = D3TD3BCConfig
    paper_name = "TD3+BC (d3rlpy)"
    description = ("d3rlpy's implementation of TD3+BC (Fujimoto & Gu 2021) on stacked pixel "
                   "frames, settings of d3rlpy's reproductions/offline/td3_plus_bc.py (its "
                   "defaults), trained by d3rlpy's update on our batches.")

    def d3rlpy_config(self, d3rlpy, encoder, scaler):
        c = self.config
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=c.actor_lr, critic_learning_rate=c.critic_lr,
            batch_size=c.batch_size, gamma=c.discount, alpha=c.alpha,
            actor_encoder_factory=encoder, critic_encoder_factory=encoder,
            observation_scaler=scaler)


@register("d3rlpy-cql")
class D3CQL(D3rlpyAlgorithm):
    Config = D3CQLConfig
    paper_name = "CQL (d3rlpy)"
    description = ("d3rlpy's implementation of continuous-action CQL (Kumar et al. 2020; SAC "
                   "with a conservative penalty) on stacked pixel frames, settings of d3rlpy's "
                   "reproductions/offline/cql.py (fixed alpha, weight 5), trained by d3rlpy's "
                   "update on our batches.")
    presets = {
        "smoke": {**D3rlpyAlgorithm.presets["smoke"], "n_action_samples": 2},
        "quick": {**D3rlpyAlgorithm.presets["quick"], "n_action_samples": 2},
    }

    def d3rlpy_config(self, d3rlpy, encoder, scaler):
        c = self.config
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=c.actor_lr, critic_learning_rate=c.critic_lr,
            temp_learning_rate=c.temp_lr, alpha_learning_rate=c.alpha_lr,
            initial_alpha=c.alpha, alpha_threshold=c.alpha_threshold,
            conservative_weight=c.conservative_weight, n_action_samples=c.n_action_samples,
            batch_size=c.batch_size, gamma=c.discount,
            actor_encoder_factory=encoder, critic_encoder_factory=encoder,
            observation_scaler=scaler)


@register("d3rlpy-iql")
class D3IQL(D3rlpyAlgorithm):
    Config = D3IQLConfig
    paper_name = "IQL (d3rlpy)"
    description = ("d3rlpy's implementation of IQL (Kostrikov et al. 2021) on stacked pixel "
                   "frames, settings of d3rlpy's reproductions/offline/iql.py (return-based "
                   "reward scaler x1000, cosine actor lr), trained by d3rlpy's update on our "
                   "batches.")

    def d3rlpy_config(self, d3rlpy, encoder, scaler):
        c = self.config
        actor_optim = d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(
                T_max=c.train_steps) if c.actor_cosine else None)
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=c.actor_lr, critic_learning_rate=c.critic_lr,
            actor_optim_factory=actor_optim,
            batch_size=c.batch_size, gamma=c.discount, expectile=c.expectile,
            weight_temp=c.weight_temp, max_weight=c.max_weight,
            reward_scaler=self.return_scaler(d3rlpy, c.reward_multiplier),
            actor_encoder_factory=encoder, critic_encoder_factory=encoder,
            value_encoder_factory=encoder, observation_scaler=scaler)

    def return_scaler(self, d3rlpy, multiplier: float):
        """d3rlpy's ReturnBasedRewardScaler with the dataset's episode returns (what
        its ``fit`` computes from the transitions; None: multiplier 0)."""
        if not multiplier:
            return None
        returns = [float(e.compute_return()) for e in self.buffer.episodes]
        if max(returns) == min(returns):
            raise ConfigError(
                f"d3rlpy-iql: the return-based reward scaler divides by the spread of the "
                f"dataset's episode returns, and all {len(returns)} episodes of "
                f"{self.ctx.dataset.directory} return {returns[0]:g}. Use a dataset with "
                "more episodes, or --set reward_multiplier=0 to train on unscaled rewards.")
        return d3rlpy.preprocessing.ReturnBasedRewardScaler(
            return_max=max(returns), return_min=min(returns), multiplier=multiplier)


@register("d3rlpy-bc")
class D3BC(D3rlpyAlgorithm):
    Config = D3BCConfig
    paper_name = "BC (d3rlpy)"
    has_value = False
    description = ("d3rlpy's implementation of behaviour cloning (deterministic policy, MSE "
                   "to data actions) on stacked pixel frames, d3rlpy's defaults (it has no "
                   "reproduction script).")

    def d3rlpy_config(self, d3rlpy, encoder, scaler):
        c = self.config
        return d3rlpy.algos.BCConfig(learning_rate=c.lr, batch_size=c.batch_size,
                                     encoder_factory=encoder, observation_scaler=scaler)

    def value(self, obs, state):
        return None
