"""The DreamerV2 core shared by CoWorld and the model-based baselines (SPEC sections 4, 7).

World model (DreamerV2): h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) (a LayerNorm GRU); e_t =
enc(o_t); posterior z_t ~ q(h_t, e_t); prior z_t ~ p(h_t) (optionally an ensemble of K
prior heads sharing the recurrent core, for Offline DV2); heads for the image, reward
and discount. Latents are discrete (32 variables x 32 classes, the paper) or Gaussian
(the authors' code, std = 2 sigmoid(x / 2) + 0.1).

Behaviour (DreamerV2): the actor imagines ``horizon`` steps from every posterior
state; the critic regresses lambda-returns computed with a slow target critic; the
actor maximises them by dynamics backpropagation and/or REINFORCE, plus entropy.

Losses are data. ``DreamerAgent.model_loss`` returns the world model's named terms
(``model/image``, ``model/reward``, ``model/cont``, ``model/kl``) and
``DreamerAgent.behaviour_loss`` the actor's and critic's (``actor/return``,
``actor/entropy``, ``critic/value``), each with its scale; an algorithm adds its own
terms (CoWorld's ``model/state_align``, ``model/relabel``, ``critic/minmax``; EWC's
``*/ewc``) and hands the loss function to ``optimize``, which runs it under the run's
precision, checks that every term has a scale, and steps each part's optimiser with
DreamerV2's clipping rule. No update reaches an optimiser any other way.

Numerics (SPEC section 7): under bfloat16 autocast the networks compute in bf16, but
distribution parameters, log-probabilities, entropies, rewards, values, discounts and
lambda-returns are float32 (each head's output is cast, as DreamerV2 casts its
distribution outputs), and the recurrent state stays float32.

The actor (SPEC 7b) is the authors' ``trunc_normal`` (``TruncNormal``): a Normal with
mean tanh(x) and std 2 sigmoid(s / 2) + 0.1 whose sample is clipped to +-(1 - 1e-6)
with a straight-through gradient; log pi and the entropy are the Normal's. (DreamerV2
itself uses a true truncated normal's density; the authors' clipped Normal is the
SPEC's choice.)

Deviations from DreamerV2, documented:
- Sampled windows always start from the initial state and a zero action (DreamerV2's
  replay marks the first row of every chunk ``is_first``); this module does it in
  ``RSSM.observe`` so that every sampler gets the same treatment.

Network details follow DreamerV2 (SPEC section 7): a LayerNorm GRU with update bias
-1, ``sigmoid2`` std for Gaussian latents, and no normalisation in the MLP heads or
the RSSM's dense layers (``layer_norm=False``, the paper preset). One documented
exception, in the quick preset only (``QUICK_MODEL``): ``layer_norm=True``
(DreamerV2's own ``norm: layer`` option), because at that size and learning rate
(128 units, model lr 6e-4) the online agent does not learn without it: on
walker-walk it scored 14 at 500 updates without and 94 with (random actions: 47;
``python benchmarks/dreamer_bench.py learning``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from coworld_bench.seeding import RandomStates
from baselines.core.config import DreamerConfig
from baselines.core.world_model import WorldModel
from baselines.core.actor_critic import ActorCritic, behaviour_metrics
from baselines.core.optim import LossFn, Optimizer, optimize, precision
from baselines.core.compile import Compiled

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Helpers ---------------------------------------------------------------------------

def to_torch(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    """Host arrays -> tensors on ``device``; to a GPU through pinned memory without
    blocking (a plain copy from pageable memory waits for the GPU's queue)."""
    out = {}
    gpu = torch.device(device).type == "cuda"
    for k, v in batch.items():
        t = torch.as_tensor(v)
        t = t.pin_memory().to(device, non_blocking=True) if gpu else t
        out[k] = t if v.dtype in (np.uint8, np.bool_) else t.float()
    return out


def pad_actions(action: torch.Tensor, dim: int) -> torch.Tensor:
    return F.pad(action, (0, dim - action.shape[-1])) if action.shape[-1] < dim else action


def pad_states(state, dim: int):
    """State vectors (numpy or torch, last axis) zero-padded to ``dim``: the twin of
    ``pad_actions`` for one encoder that reads tasks whose states differ in length."""
    missing = dim - state.shape[-1]
    if missing <= 0:
        return state
    if isinstance(state, torch.Tensor):
        return F.pad(state, (0, missing))
    return np.pad(state, [(0, 0)] * (state.ndim - 1) + [(0, missing)])


def flatten_states(states: dict) -> dict:
    """(B, T, ...) posterior states -> (B*T, ...) imagination starts."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()
            if k in ("deter", "stoch")}


def detach_states(states: dict) -> dict:
    return {k: v.detach() for k, v in states.items() if k in ("deter", "stoch")}


class DreamerAgent(nn.Module):
    """World model + actor-critic + optimisers: one DreamerV2 agent.

    ``model_loss`` and ``behaviour_loss`` are the loss functions of the two halves
    of a DreamerV2 update; ``optimize`` runs any loss function over this agent's parts
    (``model``, ``actor``, ``critic``). ``train_model`` / ``train_behaviour`` are plain
    DreamerV2's two halves; algorithms write their own loss functions from the same
    pieces and add their terms.
    """

    def __init__(self, cfg: DreamerConfig, action_dim: int, device, seed: int,
                 state_dim: int | None = None, compile_backend: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.device = device
        self.wm = WorldModel(cfg, action_dim, state_dim).to(device)
        self.ac = ActorCritic(cfg, self.wm.rssm.feat_dim, action_dim).to(device)
        if torch.device(device).type == "cuda":
            # Image batches arrive channels-last (NHWC permuted); so do the conv weights.
            self.wm.encoder.to(memory_format=torch.channels_last)
            self.wm.decoder.to(memory_format=torch.channels_last)
        if compile_backend:  # the run's --compile: the two sequential loops of an update
            self.wm.rssm.observe = Compiled(self.wm.rssm.observe, compile_backend,
                                            "RSSM.observe")
            self.ac.imagine = Compiled(self.ac.imagine, compile_backend, "imagination")
        self.model_opt = Optimizer(self.wm.parameters(), cfg.model_lr, cfg.grad_clip,
                                   cfg.weight_decay)
        self.rng = np.random.default_rng(seed)

    @property
    def optimizers(self) -> dict[str, Optimizer]:
        return {"model": self.model_opt, **self.ac.optimizers}

    def batch(self, source, indices=None) -> dict[str, torch.Tensor]:
        """A (batch, seq_len) batch from a SequenceSampler-like (``indices``: the
        sequences to read, from its ``sample_indices()``) or a Replay."""
        cfg = self.cfg
        if hasattr(source, "sample_indices"):
            data = source.sample(indices)
        else:
            data = source.sample(self.rng, cfg.batch_size, cfg.seq_len)
        keep = "image" if self.cfg.obs == "image" else "state"
        data = to_torch({k: v for k, v in data.items() if k not in ("image", "state") or k == keep},
                        self.device)
        data["action"] = pad_actions(data["action"], self.action_dim)
        if keep == "state" and self.state_dim:  # several tasks' states: the longest
            data["state"] = pad_states(data["state"], self.state_dim)
        return data

    # Loss functions --------------------------------------------------------------------

    def model_scales(self) -> Scales:
        scales = {"model/image": 1.0, "model/reward": 1.0, "model/kl": self.cfg.kl_scale}
        if self.cfg.pred_discount:
            scales["model/cont"] = 1.0
        return scales

    def model_loss(self, batch: dict, heads=None) -> tuple[Losses, Scales, dict]:
        """DreamerV2's world-model loss; aux = {post, embed, kl}."""
        losses, post, aux = self.wm.loss(batch, heads=heads)
        return losses, self.model_scales(), {"post": post, **aux}

    @contextlib.contextmanager
    def frozen_model(self):
        """The world model's parameters take no gradient inside (behaviour learning:
        gradients flow through the model into the actions, never into the model)."""
        self.wm.requires_grad_(False)
        try:
            yield
        finally:
            self.wm.requires_grad_(True)

    def imagine(self, post: dict, heads=None, all_heads: bool = False, ac=None) -> dict:
        """Imagination of ``horizon`` steps from every posterior state; call it (and the
        loss on its trajectory) inside ``frozen_model()``."""
        return (ac or self.ac).imagine(self.wm, flatten_states(post), self.cfg.horizon,
                                       heads=heads, all_heads=all_heads)

    def behaviour_loss(self, post: dict, ac=None) -> tuple[Losses, Scales, dict]:
        """DreamerV2's actor-critic loss in imagination from ``post`` on the model's
        reward; ``ac``: another actor-critic on this model. aux = the actor-critic's
        aux plus the trajectory ``traj``."""
        ac = ac or self.ac
        with self.frozen_model():
            traj = self.imagine(post, ac=ac)
            feat = traj["feat"][1:]
            losses, aux = ac.loss(traj, self.wm.reward_of(feat), self.wm.cont_of(feat))
        return losses, ac.scales(), {**aux, "traj": traj}

    def optimize(self, loss_fn: LossFn, *args, optimizers=None, **kwargs):
        """``optimize`` over this agent's parts (or ``optimizers``)."""
        return optimize(optimizers or self.optimizers, loss_fn, *args,
                        precision=precision(self.cfg, self.device), **kwargs)

    @torch.no_grad()
    def posterior(self, batch: dict) -> dict:
        """Posterior states of a batch, without gradient (a frozen world model)."""
        with precision(self.cfg, self.device):
            post, _ = self.wm.rssm.observe(self.wm.embed(batch), batch["action"],
                                           batch["is_first"])
        return detach_states(post)

    # Plain DreamerV2 -------------------------------------------------------------------

    def train_model(self, batch) -> tuple[dict, dict]:
        """One world-model update; returns the (detached) posterior and metrics."""
        metrics, aux = self.optimize(self.model_loss, batch)
        metrics["model/kl_value"] = aux["kl"]
        return detach_states(aux["post"]), metrics

    def train_behaviour(self, post: dict) -> dict:
        """One actor and critic update in imagination from every posterior state."""
        metrics, aux = self.optimize(self.behaviour_loss, post)
        self.ac.update_slow()
        return {**metrics, **behaviour_metrics(aux)}

    # Acting ------------------------------------------------------------------------

    @torch.no_grad()
    def observe_step(self, obs: dict, state):
        """Posterior state after ``obs``; ``state`` = (rssm state, previous action)."""
        if state is None or obs["is_first"]:
            rssm_state = self.wm.rssm.initial(1, self.device)
            prev_action = torch.zeros(1, self.action_dim, device=self.device)
        else:
            rssm_state, prev_action = state
        x = obs[self.wm.obs_key]
        if self.wm.obs_key == "state" and self.state_dim:
            x = pad_states(x, self.state_dim)
        with precision(self.cfg, self.device):
            embed = self.wm.encoder(torch.as_tensor(x[None], device=self.device))
            post, _ = self.wm.rssm.obs_step(rssm_state, prev_action, embed)
        return post

    @torch.no_grad()
    def act(self, obs: dict, state, deterministic: bool, ac=None):
        ac = ac or self.ac
        post = self.observe_step(obs, state)
        with precision(self.cfg, self.device):
            dist = ac.policy(self.wm.rssm.feat(post))
        action = dist.mode() if deterministic else dist.rsample()
        return action[0].cpu().numpy(), (detach_states(post), action)

    @torch.no_grad()
    def value_of(self, state, ac=None) -> float:
        post, _ = state
        with precision(self.cfg, self.device):
            return float((ac or self.ac).value(self.wm.rssm.feat(post))[0])

    @torch.no_grad()
    def reward_of_state(self, state) -> float:
        """The reward head's prediction at the posterior state of ``act``'s state."""
        post, _ = state
        with precision(self.cfg, self.device):
            return float(self.wm.reward_of(self.wm.rssm.feat(post))[0])

    def full_state(self) -> dict:
        return {"model": self.state_dict(), "model_opt": self.model_opt.state_dict(),
                "ac_opt": self.ac.optimizer_state(), "ac_updates": self.ac.updates,
                "rngs": RandomStates(batches=self.rng).state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.ac.load_optimizer_state(state["ac_opt"])
        self.ac.updates = int(state["ac_updates"])
        RandomStates(batches=self.rng).load_state_dict(state["rngs"])

