"""LOMPO (V-D4RL's ``baselines/lompo``) and LOMPO Finetune (SPEC section 5).

World model: a Gaussian-latent RSSM (stoch 64, deter 256) with K = 7 prior heads
sharing one recurrent core, a conv encoder, an image decoder and a reward head
(``baselines/core/world_model.py``'s ``WorldModel``), trained on dataset sequences for
``model_updates`` with one random prior head per time step, then frozen. Its loss is
the reference's: -log p(image) - log p(reward) + KL(posterior || prior), no free nats.

Latent data (reference ``_process_data_to_latent`` / ``_generate_latent_data``):

- the *real* buffer holds the posterior latent state s = [z, h] of every dataset row,
  filtered along whole episodes, as transitions (s_t, a_{t+1}, s_{t+1}, r_{t+1});
- the *latent* buffer (a ring as large as the dataset) holds ``horizon``-step rollouts
  of the actor plus exploration noise (additive N(0, 0.2^2), clipped to [-1, 1]) in
  the model, started from the posterior states of one sequence batch. Each imagined
  step draws one prior head for the whole batch; its reward is the penalised
  r_hat - lambda u (lambda = 5), where u is the standard deviation over the K heads of
  log p_k(z'), the log-likelihood of the sampled next latent z' under each head's
  prior (reference ``penalty_type: log_prob``). It is filled to ``latent_prefill``
  transitions before the first agent update and refreshed with one batch of rollouts
  every ``refresh_every`` agent updates.

Agent (reference ``_agent_train_step``): a deterministic actor a = tanh(MLP(s)) and twin
Q-functions on latent states, DDPG-style: every update draws ``agent_batch_size``
real and as many imagined transitions, regresses both Q to
r + gamma (1 - done) min_i Q'_i(s', pi(s')) (target critics, no target actor), and
trains the actor to maximise min_i Q_i(s, pi(s)); both losses are taken before either
step, and the target critics track the critics with rate tau = 5e-3 after every update.
The target critics start crosswise, as the reference's (``target_qf1 = deepcopy(qf2)``,
``target_qf2 = deepcopy(qf1)``); each then tracks its own critic.

Schedule (SPEC section 7b): ``model_updates`` (25k, the reference's
``model_train_steps``) world-model updates, then ``agent_updates`` (100k) agent
updates; ``train_steps`` counts both (125k). The paper's training-time table gives
LOMPO 100k iterations: the original LOMPO's ``agent_train_steps`` after its model
phase (V-D4RL's LOMPO runs 150k agent updates; its ``train_steps = 100000`` is the
number of sequences its dataset iterator yields, not a training length).

Precision: float32, as both references (V-D4RL's ``precision = 32``); ``precision=16``
runs the world model and agent under bfloat16 autocast on CUDA.

LOMPO Finetune: LOMPO pretrained online on the source, then LOMPO on the offline
target dataset from the pretrained weights (``baselines/dv2_finetune.py``'s shape).
Pretraining counts environment steps (SPEC section 7): ``pretrain_env_steps /
train_every`` updates; each collects ``train_every`` source steps with the actor plus
exploration noise (random actions during the ``prefill``) into a replay under the
run's work directory, then takes one world-model update on a replay batch, adds the
rollouts from that batch's posterior states to the latent buffer, and takes one agent
update whose real half is drawn from the transitions of that same batch (the model
moves every update, so older posterior states would be stale). The target phase is
LOMPO's whole schedule (model finetuned for ``model_updates``, then frozen; the latent
buffer is emptied of source rollouts first). Both phases act in the pair's larger
action space.

Deviations from the reference, documented:
- The RSSM is the DreamerV2 core shared with the other model-based baselines: a
  LayerNorm GRU (update bias -1) where the reference has a plain Keras GRU cell, and
  latent std 2 sigmoid(x / 2) + 0.1 (SPEC section 7) where it has softplus(x) + 0.1;
  its encoder and decoder use ELU where the reference uses ReLU.
- The reference's KL(post || prior) is the shared balanced KL with balance 0.5, free
  nats 0 and scale 2 x ``kl_scale``: its value is the KL and its gradient is exactly
  the plain KL's.
- Adam's epsilon is 1e-5 (the shared optimiser) where the reference has Keras' 1e-7.
- The real buffer is built once after the model is frozen, one posterior sample per
  dataset row. The reference fills it the same way, then at every refresh re-encodes
  one more episode (cycling through the files) and adds it to its ring of real
  transitions: the posterior's stochastic latent is sampled afresh, so over training
  its real buffer holds several posterior samples of each row. Kept here so that the
  real buffer is a function of the frozen model and the seed, rebuilt after a restart
  rather than carried in the checkpoint.
- Real transitions keep the dataset's ``discount`` (1 - terminal); the reference has no
  continuation head and sets every terminal to 0, which is the same on tasks without
  terminal states (all of this benchmark's).

Resuming: the latent buffer travels with the checkpoint (float32, as many rows as it
holds; ~0.26 GB at the paper's size for a 100k-step dataset); the real buffer is recomputed after a restart
from the frozen model with a fixed seed, so it is identical to the one it replaces.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from baselines.core.agent import detach_states, flatten_states, pad_actions, to_torch
from baselines.core.config import DreamerConfig
from baselines.core.optim import Optimizer, optimize, precision
from baselines.core.world_model import WorldModel
from baselines.core.online import OnlineLearner
from baselines.core.nets import mlp, soft_update
from baselines.core.schedules import (
    PAPER_PRETRAINING, check_pretraining, pretraining_lines, updates_for_env_steps,
)
from coworld_bench.algorithm import Algorithm, Choice, Range, RunContext, TrainConfig
from coworld_bench.errors import ConfigError
from coworld_bench.data import SequenceSampler
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates, derive_seed

TRANSITION_KEYS = ("obs", "action", "next_obs", "reward", "discount")


# Pure functions (unit-tested against hand-computed values) -------------------------

def log_likelihood_uncertainty(means: torch.Tensor, stds: torch.Tensor, sample: torch.Tensor
                               ) -> torch.Tensor:
    """LOMPO's uncertainty u (reference ``penalty_type: log_prob``): the standard
    deviation over the K prior heads (population std, as ``tf.math.reduce_std``) of
    log N(z'; mu_k, diag sigma_k^2), the log-likelihood of the sampled next latent z'
    under each head, summed over latent dimensions.

    ``means``, ``stds``: (K, ..., S) each head's prior; ``sample``: (..., S) -> (...).
    """
    dist = torch.distributions.Normal(means.float(), stds.float(), validate_args=False)
    log_likelihood = dist.log_prob(sample.float()).sum(-1)  # (K, ...)
    return log_likelihood.std(0, unbiased=False)


def penalised_reward(reward: torch.Tensor, uncertainty: torch.Tensor, penalty: float
                     ) -> torch.Tensor:
    """r_hat - lambda * u (reference ``modified_rewards``, lambda = ``lmbd`` = 5)."""
    return reward.float() - penalty * uncertainty.float()


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_q1: torch.Tensor,
              next_q2: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma * (1 - done) * min(Q'_1(s', pi(s')), Q'_2(s', pi(s'))); ``discount``
    is the continuation 1 - done."""
    return reward.float() + gamma * discount.float() * torch.minimum(next_q1.float(),
                                                                     next_q2.float())


def exploration(action: torch.Tensor, amount: float, generator: torch.Generator
                ) -> torch.Tensor:
    """The reference's ``additive_gaussian`` exploration: clip(a + N(0, amount^2), -1, 1)."""
    noise = torch.randn(action.shape, generator=generator).to(action.device) * amount
    return (action.float() + noise).clamp(-1.0, 1.0)


def sequence_transitions(feat: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
    """The transitions between consecutive rows of (B, T) sequences, flattened to
    B (T - 1): (s_t, a_{t+1}, s_{t+1}, r_{t+1}, discount_{t+1}); a dataset row holds the
    action that led to it and the reward of reaching it."""
    flat = lambda x: x.reshape(-1, *x.shape[2:]).float()  # noqa: E731
    return {"obs": flat(feat[:, :-1]), "action": flat(batch["action"][:, 1:]),
            "next_obs": flat(feat[:, 1:]), "reward": flat(batch["reward"][:, 1:]),
            "discount": flat(batch["discount"][:, 1:])}


def mixed_batch(real: dict, imagined: dict) -> dict[str, torch.Tensor]:
    """The agent's batch: the real transitions first, then the imagined ones (reference
    ``LatentReplayBuffer.sample``: ``batch_size`` of each)."""
    return {k: torch.cat([real[k], imagined[k]]) for k in TRANSITION_KEYS}


# Latent transitions ----------------------------------------------------------------

class LatentBuffer:
    """Transitions between latent states on the device, a ring of ``capacity`` rows
    (reference ``LatentReplayBuffer``, one per kind). Writes past the end wrap to the
    start; samples are uniform with replacement over the rows held."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.data: dict[str, torch.Tensor] | None = None
        self.size = 0
        self.position = 0

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        self.data, self.size, self.position = None, 0, 0

    def add(self, transitions: dict[str, torch.Tensor]) -> None:
        n = len(transitions["reward"])
        if self.data is None:
            self.data = {k: torch.zeros(self.capacity, *v.shape[1:], dtype=torch.float32,
                                        device=v.device) for k, v in transitions.items()}
        if n > self.capacity:  # only the last ``capacity`` rows would survive the wrap
            self.position = (self.position + n - self.capacity) % self.capacity
            transitions = {k: v[n - self.capacity:] for k, v in transitions.items()}
            n = self.capacity
        index = (self.position + torch.arange(n)) % self.capacity
        index = index.to(self.data["reward"].device)
        for key, value in transitions.items():
            self.data[key][index] = value.detach().float()
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if not self.size:
            raise ValueError("The latent buffer is empty.")
        index = torch.randint(0, self.size, (n,), generator=generator)
        index = index.to(self.data["reward"].device)
        return {k: v[index] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        # Clones: a slice would save its whole storage.
        data = {k: v[:self.size].clone() for k, v in self.data.items()} if self.size else {}
        return {"size": self.size, "position": self.position, "data": data}

    def load_state_dict(self, state: dict) -> None:
        self.clear()
        if int(state["size"]):
            self.add(state["data"])
            self.position = int(state["position"])


# Configuration ---------------------------------------------------------------------

@dataclasses.dataclass
class LOMPOConfig(TrainConfig):
    """LOMPO; defaults are the reference's (V-D4RL ``baselines/lompo/run.py``).

    Attributes:
      stoch: Gaussian latent dimensions.
      deter: GRU size.
      hidden: size of the RSSM's other layers (the reference: the GRU size).
      cnn_depth: encoder/decoder base channels.
      units: width of the reward head, actor and critics.
      reward_layers, actor_layers, critic_layers: their hidden layers (2, 4, 3).
      ensemble: prior heads K.
      kl_scale: weight of KL(posterior || prior) (no free nats).
      model_lr, actor_lr, critic_lr: Adam learning rates.
      grad_clip: global gradient-norm clip, per optimiser.
      batch_size, seq_len: world-model batches of sequences; one such batch also
        starts every refresh's rollouts.
      model_updates: world-model updates before it is frozen (reference: 25k).
      agent_updates: actor and critic updates after it (the original LOMPO's
        ``agent_train_steps``: 100k, the paper's "100k iterations").
      train_steps: updates in total (unset: model_updates + agent_updates; given, the
        agent phase takes what is left after the model's).
      agent_batch_size: real transitions per agent update, and as many imagined ones.
      horizon: steps of each latent rollout.
      uncertainty_penalty: lambda of r_hat - lambda * u.
      latent_prefill: imagined transitions before the first agent update (reference
        ``start_training``; at most the buffer's capacity).
      refresh_every: agent updates between two refreshes (one batch of rollouts each).
      latent_capacity: rows of the latent buffer (0: the dataset's step count, the
        reference's choice).
      tau: rate of the target critics.
      exploration_noise: std of the additive Gaussian noise on the actor's actions in
        rollouts and when collecting online.
      precision: 32 = float32 (the references'); 16 = bfloat16 autocast on CUDA
        (float32 on a CPU).
      layer_norm: LayerNorm in the MLPs and the RSSM's dense layers (on in the quick preset).
    """

    train_steps: int | None = None  # model_updates + agent_updates
    stoch: int = 64
    deter: int = 256
    hidden: int = 256
    cnn_depth: int = 32
    units: int = 256
    reward_layers: int = 2
    actor_layers: int = 4
    critic_layers: int = 3
    ensemble: int = 7
    kl_scale: float = 1.0
    model_lr: float = 6e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_clip: float = 100.0
    batch_size: int = 64
    seq_len: int = 50
    model_updates: int = 25_000
    agent_updates: int = 100_000
    agent_batch_size: int = 256
    horizon: int = 5
    uncertainty_penalty: float = 5.0
    latent_prefill: int = 50_000
    refresh_every: int = 200
    latent_capacity: int = 0
    tau: float = 5e-3
    exploration_noise: float = 0.2
    discount: float = 0.99
    precision: int = 32
    layer_norm: bool = False

    checks: ClassVar[dict] = {
        **{k: Range(1) for k in ("stoch", "deter", "hidden", "cnn_depth", "units",
                                  "reward_layers", "actor_layers", "critic_layers", "ensemble",
                                  "batch_size", "agent_batch_size", "horizon", "refresh_every",
                                  "agent_updates")},
        "seq_len": Range(2),
        **{k: Range(0) for k in ("kl_scale", "model_lr", "actor_lr", "critic_lr", "grad_clip",
                                  "model_updates", "uncertainty_penalty", "latent_prefill",
                                  "latent_capacity", "exploration_noise")},
        "tau": Range(0, 1), "precision": Choice((16, 32)),
    }

    def model_config(self) -> DreamerConfig:
        """The shared world model's settings for this config (see the module docstring
        for the KL)."""
        return DreamerConfig(
            latent="continuous", stoch=self.stoch, classes=1, deter=self.deter,
            hidden=self.hidden, cnn_depth=self.cnn_depth, mlp_units=self.units,
            mlp_layers=self.reward_layers, ensemble=self.ensemble, kl_scale=2 * self.kl_scale,
            kl_balance=0.5, free_nats=0.0, model_lr=self.model_lr, weight_decay=0.0,
            batch_size=self.batch_size, seq_len=self.seq_len, horizon=self.horizon,
            discount=self.discount, pred_discount=False, grad_clip=self.grad_clip,
            precision=self.precision, obs="image", layer_norm=self.layer_norm)


# Agent -----------------------------------------------------------------------------

class LOMPOAgent(nn.Module):
    """World model, deterministic actor, twin critics with targets, and their
    optimisers (parts ``model``, ``actor``, ``critic``), all updated through
    ``baselines.core.optim.optimize``."""

    def __init__(self, cfg: LOMPOConfig, action_dim: int, device, seed: int):
        super().__init__()
        self.cfg = cfg
        self.model_cfg = cfg.model_config()
        self.action_dim = action_dim
        self.device = device
        self.wm = WorldModel(self.model_cfg, action_dim)
        feat, norm = self.wm.rssm.feat_dim, cfg.layer_norm
        self.actor = mlp(feat, cfg.units, cfg.actor_layers, action_dim, norm=norm)
        self.q1 = mlp(feat + action_dim, cfg.units, cfg.critic_layers, 1, norm=norm)
        self.q2 = mlp(feat + action_dim, cfg.units, cfg.critic_layers, 1, norm=norm)
        # Crosswise, as the reference's: target 1 starts as critic 2 and vice versa.
        self.target_q1, self.target_q2 = copy.deepcopy(self.q2), copy.deepcopy(self.q1)
        self.target_q1.requires_grad_(False)
        self.target_q2.requires_grad_(False)
        self.to(device)
        self.optimizers = {
            "model": Optimizer(self.wm.parameters(), cfg.model_lr, cfg.grad_clip),
            "actor": Optimizer(self.actor.parameters(), cfg.actor_lr, cfg.grad_clip),
            "critic": Optimizer([*self.q1.parameters(), *self.q2.parameters()], cfg.critic_lr,
                                cfg.grad_clip)}
        # Prior heads, exploration noise and buffer indices; replay sequences (online).
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    @property
    def feat_dim(self) -> int:
        return self.wm.rssm.feat_dim

    # Pieces --------------------------------------------------------------------------

    def pi(self, feat: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(MLP(s)), float32."""
        return torch.tanh(self.actor(feat).float())

    @staticmethod
    def q(net: nn.Module, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([feat, action.to(feat.dtype)], -1))[..., 0].float()

    @contextlib.contextmanager
    def frozen_critics(self):
        """The critics take no gradient inside (the actor's loss)."""
        self.q1.requires_grad_(False)
        self.q2.requires_grad_(False)
        try:
            yield
        finally:
            self.q1.requires_grad_(True)
            self.q2.requires_grad_(True)

    def draw_heads(self, steps: int) -> list[int]:
        """One random prior head per time step (for the whole batch)."""
        return torch.randint(0, self.cfg.ensemble, (steps,), generator=self.generator).tolist()

    def batch(self, data: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """A (B, T) batch of image sequences as tensors, actions padded to the agent's."""
        out = to_torch({k: v for k, v in data.items() if k != "state"}, self.device)
        out["action"] = pad_actions(out["action"], self.action_dim)
        return out

    # World model ---------------------------------------------------------------------

    def model_loss(self, batch: dict, heads: list[int]):
        losses, post, aux = self.wm.loss(batch, heads=heads)
        scales = {"model/image": 1.0, "model/reward": 1.0, "model/kl": self.model_cfg.kl_scale}
        return losses, scales, {"post": post, **aux}

    def train_model(self, batch: dict) -> tuple[dict, dict]:
        """One world-model update, each time step's prior from a random head; returns
        the (detached) posterior and the metrics."""
        metrics, aux = optimize({"model": self.optimizers["model"]}, self.model_loss, batch,
                                self.draw_heads(batch["action"].shape[1]),
                                precision=precision(self.model_cfg, self.device))
        return detach_states(aux["post"]), metrics

    @torch.no_grad()
    def posterior(self, batch: dict) -> dict:
        """Posterior states of (B, T) sequences filtered from their first row, without
        gradient; ``wm.rssm.feat`` of them is s = [z, h]."""
        with precision(self.model_cfg, self.device):
            post, _ = self.wm.rssm.observe(self.wm.embed(batch), batch["action"],
                                           batch["is_first"])
        return detach_states(post)

    @torch.no_grad()
    def rollouts(self, start: dict) -> dict[str, torch.Tensor]:
        """``horizon``-step latent rollouts of the exploring actor from N start states
        (reference ``_generate_latent_data``): (horizon * N) transitions, step by step,
        with the penalised reward and (under ``uncertainty``) u."""
        cfg, rssm = self.cfg, self.wm.rssm
        state = {"deter": start["deter"], "stoch": start["stoch"]}
        out = {k: [] for k in (*TRANSITION_KEYS, "uncertainty")}
        with precision(self.model_cfg, self.device):
            for head in self.draw_heads(cfg.horizon):
                feat = rssm.feat(state)
                action = exploration(self.pi(feat), cfg.exploration_noise, self.generator)
                nxt = rssm.img_step(state, action, head=head, all_heads=True)
                u = log_likelihood_uncertainty(nxt["heads"]["mean"], nxt["heads"]["std"],
                                               nxt["stoch"])
                next_feat = rssm.feat(nxt)
                reward = penalised_reward(self.wm.reward_of(next_feat), u,
                                          cfg.uncertainty_penalty)
                for key, value in (("obs", feat), ("action", action), ("next_obs", next_feat),
                                   ("reward", reward), ("discount", torch.ones_like(reward)),
                                   ("uncertainty", u)):
                    out[key].append(value.float())
                state = {"deter": nxt["deter"], "stoch": nxt["stoch"]}
        return {k: torch.cat(v) for k, v in out.items()}

    # Agent ---------------------------------------------------------------------------

    def agent_loss(self, batch: dict):
        """Twin-Q regression to the TD target and the actor's -min_i Q_i(s, pi(s))
        (reference ``_agent_train_step``; its CQL term has alpha = 0 and is left out)."""
        cfg = self.cfg
        obs, next_obs = batch["obs"], batch["next_obs"]
        q1 = self.q(self.q1, obs, batch["action"])
        q2 = self.q(self.q2, obs, batch["action"])
        with torch.no_grad():
            next_action = self.pi(next_obs)
            target = td_target(batch["reward"], batch["discount"],
                               self.q(self.target_q1, next_obs, next_action),
                               self.q(self.target_q2, next_obs, next_action), cfg.discount)
        with self.frozen_critics():
            action = self.pi(obs)
            q_pi = torch.minimum(self.q(self.q1, obs, action), self.q(self.q2, obs, action))
        losses = {"critic/q1": ((q1 - target) ** 2).mean(),
                  "critic/q2": ((q2 - target) ** 2).mean(),
                  "actor/q": -q_pi.mean()}
        aux = {"q1": q1.detach().mean(), "q2": q2.detach().mean(), "target": target.mean()}
        return losses, {k: 1.0 for k in losses}, aux

    def train_agent(self, real: LatentBuffer, imagined: LatentBuffer) -> dict:
        """One actor and critic update on half real, half imagined transitions, then
        the target critics' soft update."""
        n = self.cfg.agent_batch_size
        batch = mixed_batch(real.sample(n, self.generator), imagined.sample(n, self.generator))
        metrics, aux = optimize({"actor": self.optimizers["actor"],
                                 "critic": self.optimizers["critic"]}, self.agent_loss, batch,
                                precision=precision(self.model_cfg, self.device))
        soft_update(self.q1, self.target_q1, self.cfg.tau)
        soft_update(self.q2, self.target_q2, self.cfg.tau)
        return {**metrics, "critic/q1_mean": aux["q1"], "critic/q2_mean": aux["q2"],
                "critic/target_mean": aux["target"],
                "real/reward_mean": batch["reward"][:n].mean(),
                "imagined/reward_mean": batch["reward"][n:].mean()}

    # Acting ------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, obs: dict, state, deterministic: bool):
        """The actor at the posterior after ``obs``; ``state`` = (posterior, previous
        action). Exploring: the reference's additive Gaussian noise."""
        if state is None or obs["is_first"]:
            latent = self.wm.rssm.initial(1, self.device)
            prev_action = torch.zeros(1, self.action_dim, device=self.device)
        else:
            latent, prev_action = state
        with precision(self.model_cfg, self.device):
            embed = self.wm.encoder(torch.as_tensor(obs["image"][None], device=self.device))
            post, _ = self.wm.rssm.obs_step(latent, prev_action, embed)
            action = self.pi(self.wm.rssm.feat(post))
        if not deterministic:
            action = exploration(action, self.cfg.exploration_noise, self.generator)
        return action[0].cpu().numpy(), (detach_states(post), action)

    @torch.no_grad()
    def value_of(self, state) -> float:
        """min_i Q_i(s, pi(s)) at the posterior state s."""
        post, _ = state
        with precision(self.model_cfg, self.device):
            feat = self.wm.rssm.feat(post)
            action = self.pi(feat)
            return float(torch.minimum(self.q(self.q1, feat, action),
                                       self.q(self.q2, feat, action))[0])

    def full_state(self) -> dict:
        return {"nets": self.state_dict(),
                "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
                "rngs": RandomStates(generator=self.generator, rng=self.rng).state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["nets"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        RandomStates(generator=self.generator, rng=self.rng).load_state_dict(state["rngs"])


# LOMPO -----------------------------------------------------------------------------

def check_agent_phase(config, offline_updates: int):
    """The offline schedule must leave agent updates after the model's."""
    if offline_updates <= config.model_updates:
        raise ConfigError(f"train_steps={config.train_steps} leaves {offline_updates} offline "
                          f"updates, no more than model_updates={config.model_updates}: no agent "
                          "update would run. Raise train_steps (or leave it unset: "
                          "model_updates + agent_updates) or lower model_updates.")
    return config


def agent_phase_lines(config, offline_updates: int) -> list[str]:
    """The estimate's sentence on LOMPO's two offline phases."""
    return [f"Of the {offline_updates} offline updates, the first {config.model_updates} train "
            f"the world model, then frozen; the other {offline_updates - config.model_updates} "
            "are agent updates (latent rollouts, actor and critics), each cheaper than a "
            "model update."]


SMOKE = dict(stoch=4, deter=32, hidden=32, cnn_depth=4, units=32, ensemble=3, batch_size=4,
             seq_len=8, agent_batch_size=8, model_updates=10, agent_updates=10, train_steps=None,
             latent_prefill=100, refresh_every=5, eval_every=0)
# The quick size uses LayerNorm, as the other model-based baselines' (baselines/core).
QUICK = dict(stoch=32, deter=128, hidden=128, cnn_depth=16, units=128, batch_size=16,
             seq_len=32, agent_batch_size=64, model_updates=1_000, agent_updates=1_000,
             train_steps=None,
             latent_prefill=5_000, refresh_every=50, layer_norm=True)


@register("lompo")
class LOMPO(Algorithm):
    Config = LOMPOConfig
    description = ("LOMPO (V-D4RL): 7-head Gaussian RSSM, latent rollouts penalised by the heads' "
                   "log-likelihood spread, DDPG-style actor and twin Q on latent states.")
    paper_name = "LOMPO"
    family = "model-based"
    has_value = True
    presets = {"smoke": SMOKE, "quick": QUICK}

    def sequence_shape(self):
        return self.config.batch_size, self.config.seq_len

    @classmethod
    def resolve(cls, config, source, target):
        if config.train_steps is None:
            config.train_steps = config.model_updates + config.agent_updates
        return check_agent_phase(config, config.train_steps)

    @classmethod
    def schedule_lines(cls, config):
        return agent_phase_lines(config, config.train_steps)

    def __init__(self, config: LOMPOConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.agent = LOMPOAgent(config, ctx.action_dim, ctx.device, ctx.seed)
        self.sampler = SequenceSampler(ctx.dataset, config.batch_size, config.seq_len,
                                       seed=ctx.seed)
        self.latent = LatentBuffer(config.latent_capacity or ctx.dataset.num_steps)
        self.real: LatentBuffer | None = None  # built once the model is frozen

    # Latent data ---------------------------------------------------------------------

    def build_real_buffer(self) -> LatentBuffer:
        """Posterior transitions of every dataset episode, filtered from its first row
        (reference ``_process_data_to_latent``). Posterior samples use a fixed seed, so
        a resumed run rebuilds the same buffer; the run's random state is untouched."""
        dataset, device = self.ctx.dataset, self.ctx.device
        by_length: dict[int, list[int]] = {}
        for index, steps in enumerate(dataset.lengths):
            by_length.setdefault(int(steps), []).append(index)
        count = int(sum(dataset.lengths))
        buffer = LatentBuffer(count)
        devices = [device] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.ctx.seed, 31))
            for steps, indices in sorted(by_length.items()):
                chunk = max(1, 2048 // (steps + 1))  # episodes encoded at once
                for i in range(0, len(indices), chunk):
                    episodes = [dataset.load_episode(j) for j in indices[i:i + chunk]]
                    keys = ("image", "action", "reward", "discount", "is_first")
                    batch = self.agent.batch({k: np.stack([e[k] for e in episodes])
                                              for k in keys})
                    feat = self.agent.wm.rssm.feat(self.agent.posterior(batch))
                    buffer.add(sequence_transitions(feat, batch))
        return buffer

    def refresh(self, post: dict | None = None) -> dict:
        """Adds rollouts from the (B, T) posterior states ``post`` (default: those of a
        new dataset batch) to the latent buffer; returns the rollouts' metrics."""
        if post is None:
            post = self.agent.posterior(self.agent.batch(self.sampler.sample()))
        rollouts = self.agent.rollouts(flatten_states(detach_states(post)))
        self.latent.add({k: rollouts[k] for k in TRANSITION_KEYS})
        return {"imagined/uncertainty": rollouts["uncertainty"].mean(),
                "imagined/penalised_reward": rollouts["reward"].mean()}

    # Updates ---------------------------------------------------------------------------

    def offline_step(self, k: int) -> dict:
        """Update ``k`` of the offline schedule: world model, then agent."""
        cfg = self.config
        if k < cfg.model_updates:
            _, metrics = self.agent.train_model(self.agent.batch(self.sampler.sample()))
            return metrics
        if self.real is None:
            self.real = self.build_real_buffer()
        scalars = {}
        if not len(self.latent):
            while len(self.latent) < min(cfg.latent_prefill, self.latent.capacity) or \
                    not len(self.latent):
                scalars = self.refresh()
        elif (k - cfg.model_updates) % cfg.refresh_every == 0:
            scalars = self.refresh()
        return {**self.agent.train_agent(self.real, self.latent), **scalars}

    def train_step(self, step):
        return self.offline_step(step)

    def policy(self, obs, state, deterministic=True):
        return self.agent.act(obs, state, deterministic)

    def value(self, obs, state):
        return self.agent.value_of(state)

    def state_dict(self):
        return {"agent": self.agent.full_state(), "latent": self.latent.state_dict(),
                "rngs": RandomStates(sampler=self.sampler.rng).state_dict()}

    def load_state_dict(self, state):
        self.agent.load_full_state(state["agent"])
        self.latent.load_state_dict(state["latent"])
        RandomStates(sampler=self.sampler.rng).load_state_dict(state["rngs"])
        self.real = None  # rebuilt (identically) when next needed


# LOMPO Finetune --------------------------------------------------------------------

@dataclasses.dataclass
class LOMPOFinetuneConfig(LOMPOConfig):
    """LOMPO Finetune. Settings left unset (none) take the paper's schedule for the
    pair's suite.

    Attributes:
      pretrain_env_steps: source environment steps of online pretraining before the
        offline target phase (paper: 160k Meta-World/RoboDesk, 600k DMC); the phase has
        pretrain_env_steps / train_every updates.
      train_steps: updates in total, pretraining's included (unset: pretraining +
        model_updates + agent_updates).
      prefill: random source steps before the first update.
      train_every: source steps per pretraining update.
      replay_capacity: source steps kept in the replay.
    """

    train_steps: int | None = None
    pretrain_env_steps: int | None = None
    prefill: int = 5_000
    train_every: int = 5
    replay_capacity: int = 2_000_000

    checks: ClassVar[dict] = {"pretrain_env_steps": Range(1), "prefill": Range(0),
                              "train_every": Range(1), "replay_capacity": Range(1)}

    @property
    def pretrain_updates(self) -> int:
        return updates_for_env_steps(self.pretrain_env_steps, self.train_every)


class SourceLearner(OnlineLearner):
    """The online source phase: the shared driver, replay and prefill rule, with
    LOMPO's update."""

    def __init__(self, update, agent: LOMPOAgent, make_env, replay_dir, seed: int, cfg):
        super().__init__(agent, make_env, replay_dir, seed, cfg, worker=False)
        self.lompo_update = update

    def update(self) -> dict:
        return self.lompo_update()


@register("lompo-finetune")
class LOMPOFinetune(LOMPO):
    Config = LOMPOFinetuneConfig
    description = "LOMPO pretrained online on the source, then trained on the offline target."
    paper_name = "LOMPO Finetune"
    family = "transfer"
    needs_source = True
    learns_from = "online source, then offline target"
    paper = PAPER_PRETRAINING
    presets = {
        "smoke": dict(SMOKE, prefill=60, train_every=5, pretrain_env_steps=50, model_updates=4,
                      agent_updates=6),
        "quick": dict(QUICK, prefill=2_500, train_every=5, pretrain_env_steps=10_000),
    }

    @classmethod
    def schedule_lines(cls, config):
        target = config.train_steps - config.pretrain_updates
        return [*pretraining_lines(config), *agent_phase_lines(config, target)]

    @classmethod
    def resolve(cls, config, source, target):
        if config.train_steps is None:
            config.train_steps = (config.pretrain_updates + config.model_updates
                                  + config.agent_updates)
        check_pretraining(config)
        return check_agent_phase(config, config.train_steps - config.pretrain_updates)

    def __init__(self, config: LOMPOFinetuneConfig, ctx: RunContext):
        super().__init__(config, ctx)
        self.learner = SourceLearner(self.source_update, self.agent, ctx.make_source_env,
                                     ctx.artifacts.path("source_replay"), ctx.seed, config)

    def source_update(self) -> dict:
        """One online update: world model on a replay batch, rollouts from its
        posterior states, agent on that batch's transitions and the latent buffer."""
        cfg = self.config
        batch = self.agent.batch(self.learner.replay.sample(self.agent.rng, cfg.batch_size,
                                                            cfg.seq_len))
        post, metrics = self.agent.train_model(batch)
        metrics.update(self.refresh(post=post))
        real = LatentBuffer(batch["reward"].shape[0] * (cfg.seq_len - 1))
        real.add(sequence_transitions(self.agent.wm.rssm.feat(post), batch))
        metrics.update(self.agent.train_agent(real, self.latent))
        return metrics

    def train_step(self, step):
        pretrain = self.config.pretrain_updates
        if step < pretrain:
            return {f"source/{k}": v for k, v in self.learner.step().items()}
        if step == pretrain:
            self.latent.clear()  # source rollouts; the target phase starts afresh
        return self.offline_step(step - pretrain)

    def state_dict(self):
        return {**super().state_dict(), "learner": self.learner.state()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.learner.load(state["learner"])
