"""CURL: contrastive unsupervised representations + SAC, trained on the fixed offline
dataset only (SPEC section 5).

Reference: Laskin, Srinivas & Abbeel, "CURL: Contrastive Unsupervised Representations
for Reinforcement Learning" (ICML 2020; section 4 and appendix A, Table 3), and the
authors' DMControl code (``curl_sac.py``, ``encoder.py``, ``utils.py``, ``train.py``).

Networks (``curl_sac.py``):

- encoder f (the critic's): 4 conv layers of 32 3x3 filters, strides 2, 1, 1, 1, ReLU
  (``nets.DrQEncoder``: the same geometry as CURL's ``PixelEncoder``), then one linear
  layer to ``feature_dim`` = 50 and LayerNorm. CURL's code builds both its encoders
  with ``output_logits=True``, i.e. *no* tanh after the LayerNorm, while the paper's
  pseudocode ends in ``tanh``; the code is followed (``feature_tanh`` = False: set it
  to True for the paper's pseudocode).
- critic: twin Q, each an MLP of two ``hidden_dim`` ReLU layers on [f(o), a]; it owns f.
- critic target: a copy of the critic. Its encoder is the contrastive loss's momentum
  *key encoder* (CURL: ``CURL.encoder_target = critic_target.encoder``).
- actor: CURL ties the actor's conv layers to the critic's and calls them with
  ``detach_encoder=True``: here the actor reads the critic's conv output, detached,
  through a linear + LayerNorm of its own, then an MLP of two ``hidden_dim`` ReLU
  layers to (mu, log std); log std = min + (max - min)(tanh(x) + 1)/2 with bounds
  [-10, 2]; action a = tanh(mu + std * eps). Evaluation uses tanh(mu).
- W: the bilinear similarity, initialised uniform in [0, 1) as CURL's ``torch.rand``.
- initialisation (SAC-AE's ``weight_init``, used by CURL): linear weights orthogonal,
  conv weights delta-orthogonal (zero except the kernel centre, orthogonal with ReLU
  gain), biases zero.

One update (CURL's ``CurlSacAgent.update``), top to bottom in ``train_step``:

1. Sample B transitions (frame stack 3, n-step 1). Crop each observation twice with
   independent random crops (the same box for every frame of a stack): the *anchor*
   is also the critic's and actor's input, the *positive* only the contrastive key;
   the next observation gets a third independent crop (``sample_cpc``).
2. Critic: y = r + gamma * d * (min_i Q_target,i(o', a') - alpha * log pi(a'|o')),
   a' ~ pi(o'); loss sum_i mean (Q_i(o, a) - y)^2; trains f and the Q heads.
3. Every ``actor_update_every`` (2) updates, actor and temperature: actor loss
   mean(alpha * log pi(a|o) - min_i Q_i(o, a)), a ~ pi reparameterised, the critic's
   features detached (the encoder is trained by the critic and the contrastive loss
   only); temperature loss mean(alpha * (-log pi - H)) with H = -|A|, log pi detached.
4. Every ``target_update_every`` (2) updates: Q heads' targets by EMA with
   ``critic_tau`` (0.01), the key encoder with ``encoder_tau`` (0.05).
5. Contrastive loss: q = f(anchor), k = f_target(positive) without gradient, logits
   = q W k^T minus each row's max, labels arange(B) (positives on the diagonal), cross
   entropy; trains f and W. As in CURL's code, two Adams step on its one gradient: the
   ``encoder`` optimiser (CURL's ``encoder_optimizer``, over f) and the ``cpc``
   optimiser (CURL's ``cpc_optimizer``, over its CURL module: f and W), so f takes two
   Adam steps per contrastive update, each with its own moments, and W one.

Crop geometry for 64 px data (a choice; SPEC section 5). CURL renders 100 px and
trains on random 84 px crops, evaluating on the centre 84 px crop (ratio 0.84). Here
the 64 px frames are cropped to ``crop_size`` = 56 (ratio 0.875; offsets 0..8 along
each axis) for training, and the centre 56 px crop (offset 4) is what the policy and
the value trace see. The encoder is built for 56 px inputs (conv output 32x21x21).

Settings and why (``paper`` preset = the defaults):

- lr 1e-3 (encoder, actor, critic, W); 2e-4 on cheetah targets: Table 3's "2e-4
  cheetah, run; 1e-3 otherwise" (``lr`` unset = resolved from the target's domain;
  Meta-World and RoboDesk take 1e-3). Adam betas (0.9, 0.999).
- temperature: init 0.1, lr 1e-4, Adam beta1 0.5 (Table 3; ``train.py``).
- batch 512 (Table 3 of the published paper; an earlier version gave 128 except on
  cheetah), hidden 1024, feature 50, frame stack 3, discount 0.99, tau 0.01 / 0.05,
  actor and target updates every 2 critic updates (``train.py``'s defaults).
- 300k updates: the length the paper's training-time table gives every offline
  baseline (CURL's own runs count environment steps online; there are none here).

Quirks of CURL's code not copied:

- ``fast_random_crop`` draws offsets with ``randint(0, crop_max)``, which never reaches
  ``crop_max``; here every offset 0..(64 - crop_size) is drawn.
- Pixels are scaled by /255 - 0.5 (DrQEncoder) instead of /255: a constant shift that
  the first conv's bias absorbs.
- Its actor optimiser also lists the tied conv weights (they get no gradient); here the
  actor's optimiser holds only the actor's own layers.

bfloat16: the loss terms, log-probabilities and logits are float32 even under autocast
(the bilinear logits are computed with autocast off).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.core.optim import optimize
from baselines.core.nets import DrQEncoder, FrameStack, adam, mlp, soft_update
from coworld_bench.algorithm import Algorithm, Range, RunContext, TrainConfig
from coworld_bench.data import TransitionSampler
from coworld_bench.errors import ConfigError
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates


# Augmentation ------------------------------------------------------------------------

def crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int
         ) -> torch.Tensor:
    """The ``size`` x ``size`` window at (top[b], left[b]) of each image (B, C, H, W),
    the same window for every channel (i.e. every frame of a stack)."""
    dev = images.device
    rows = top.to(dev)[:, None] + torch.arange(size, device=dev)  # (B, S)
    cols = left.to(dev)[:, None] + torch.arange(size, device=dev)  # (B, S)
    batch = torch.arange(images.shape[0], device=dev)[:, None, None]
    out = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """CURL's augmentation: one uniformly placed ``size`` crop per sample, offsets in
    [0, H - size] x [0, W - size]."""
    b, _, h, w = images.shape
    top = torch.randint(0, h - size + 1, (b,), generator=generator)
    left = torch.randint(0, w - size + 1, (b,), generator=generator)
    return crop(images, top, left, size)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation crop: offset ((H - size) // 2, (W - size) // 2)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


# Networks ----------------------------------------------------------------------------

def curl_init(module: nn.Module) -> None:
    """SAC-AE's ``weight_init`` (used by CURL): orthogonal linear weights; conv weights
    zero except the kernel centre, which is orthogonal with ReLU gain; zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        centre = torch.empty(module.weight.shape[:2])
        nn.init.orthogonal_(centre, nn.init.calculate_gain("relu"))
        with torch.no_grad():
            module.weight.zero_()
            mid = module.weight.shape[2] // 2
            module.weight[:, :, mid, mid] = centre
            module.bias.zero_()


def feature_head(in_dim: int, feature_dim: int, tanh: bool) -> nn.Sequential:
    """linear -> ``feature_dim``, LayerNorm (then tanh with ``tanh``)."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim),
                         *([nn.Tanh()] if tanh else []))


class Encoder(nn.Module):
    """f: the conv trunk (``convs``) and its feature head (``head``)."""

    def __init__(self, in_channels: int, crop_size: int, feature_dim: int, tanh: bool):
        super().__init__()
        self.convs = DrQEncoder(in_channels, crop_size)
        self.head = feature_head(self.convs.out_dim, feature_dim, tanh)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(images))


class Critic(nn.Module):
    """The encoder and twin Q heads on [f(o), a]; ``forward`` takes features."""

    def __init__(self, in_channels, crop_size, feature_dim, action_dim, hidden_dim, tanh):
        super().__init__()
        self.encoder = Encoder(in_channels, crop_size, feature_dim, tanh)
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 2, 1, act=nn.ReLU)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 2, 1, act=nn.ReLU)
        self.apply(curl_init)

    def forward(self, features: torch.Tensor, action: torch.Tensor):
        h = torch.cat([features, action.to(features.dtype)], dim=-1)
        return self.q1(h), self.q2(h)


def bounded_log_std(raw: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """CURL's squashing of the log std into [low, high]."""
    return low + 0.5 * (high - low) * (torch.tanh(raw) + 1)


class Actor(nn.Module):
    """Its own feature head on the critic's (detached) conv output, then an MLP to the
    mean and bounded log std of the pre-tanh Gaussian (float32)."""

    def __init__(self, conv_dim, feature_dim, action_dim, hidden_dim, tanh, log_std_bounds):
        super().__init__()
        self.head = feature_head(conv_dim, feature_dim, tanh)
        self.policy = mlp(feature_dim, hidden_dim, 2, 2 * action_dim, act=nn.ReLU)
        self.log_std_bounds = log_std_bounds
        self.apply(curl_init)

    def forward(self, conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.policy(self.head(conv.detach())).float().chunk(2, dim=-1)
        return mu, bounded_log_std(raw, *self.log_std_bounds)


# Losses ------------------------------------------------------------------------------

def squashed_gaussian(mu: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mu + std * eps) and log pi(a) (SAC appendix C, as CURL's
    ``gaussian_logprob`` + ``squash``): sum_i [-eps_i^2 / 2 - log std_i] - (A/2) log 2pi
    - sum_i log(relu(1 - a_i^2) + 1e-6). Shapes (B, A) -> (B, A), (B, 1)."""
    action = torch.tanh(mu + noise * log_std.exp())
    gaussian = ((-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True)
                - 0.5 * math.log(2 * math.pi) * noise.shape[-1])
    log_prob = gaussian - torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return action, log_prob


def contrastive_logits(queries: torch.Tensor, keys: torch.Tensor, W: torch.Tensor
                       ) -> torch.Tensor:
    """CURL's ``compute_logits``: the bilinear similarities q W k^T (B, B) minus each
    row's maximum (for numerical stability; the cross entropy is unchanged)."""
    logits = queries @ (W @ keys.T)
    return logits - logits.max(dim=1, keepdim=True).values


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE as multiclass cross entropy: the positive of query i is key i."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum over the twin heads of the mean squared TD error."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


def actor_loss(log_prob: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """SAC's policy loss mean(alpha * log pi(a|o) - Q(o, a)), alpha a constant."""
    return (alpha.detach() * log_prob - q).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor,
                     target_entropy: float) -> torch.Tensor:
    """SAC's automatic entropy tuning as CURL writes it: mean(alpha * (-log pi - H)),
    alpha = exp(log alpha), log pi a constant."""
    return (log_alpha.exp() * (-log_prob - target_entropy).detach()).mean()


# The algorithm -----------------------------------------------------------------------

@dataclasses.dataclass
class CURLConfig(TrainConfig):
    """CURL (Laskin et al. 2020) on the offline dataset; defaults = the paper preset.

    Attributes:
      train_steps: updates in total (the paper's training-time table: 300k).
      batch_size: transitions per update (CURL Table 3: 512).
      lr: Adam learning rate of encoder, W, actor and critic (unset: 2e-4 on cheetah
        targets, 1e-3 otherwise, as CURL Table 3).
      alpha_lr: Adam learning rate of log alpha (1e-4).
      alpha_beta1: Adam beta1 of log alpha (0.5; the others use 0.9).
      init_temperature: initial entropy temperature alpha (0.1).
      frame_stack: frames per observation (3).
      crop_size: side of the random training crops and of the centre crop the policy
        and value see, in pixels of the 64 px frames (56: CURL's 84 of 100).
      feature_dim: encoder output size (50).
      feature_tanh: tanh after the encoder's LayerNorm (the paper's pseudocode; CURL's
        code has none).
      hidden_dim: width of the actor's and Q heads' MLPs (1024).
      log_std_min, log_std_max: bounds of the actor's log std (-10, 2).
      critic_tau: EMA rate of the target Q heads (0.01).
      encoder_tau: EMA rate of the momentum key encoder (0.05).
      actor_update_every: critic updates per actor and temperature update (2).
      target_update_every: critic updates per target EMA update (2).
    """

    train_steps: int = 300_000
    batch_size: int = 512
    lr: float | None = None
    alpha_lr: float = 1e-4
    alpha_beta1: float = 0.5
    init_temperature: float = 0.1
    frame_stack: int = 3
    crop_size: int = 56
    feature_dim: int = 50
    feature_tanh: bool = False
    hidden_dim: int = 1024
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    critic_tau: float = 0.01
    encoder_tau: float = 0.05
    actor_update_every: int = 2
    target_update_every: int = 2

    checks: ClassVar[dict] = {
        "batch_size": Range(2), "lr": Range(0), "alpha_lr": Range(0),
        "alpha_beta1": Range(0, 0.999), "init_temperature": Range(1e-8),
        "frame_stack": Range(1), "crop_size": Range(15, 64), "feature_dim": Range(1),
        "hidden_dim": Range(1), "log_std_min": Range(-20, 20), "log_std_max": Range(-20, 20),
        "critic_tau": Range(0, 1), "encoder_tau": Range(0, 1),
        "actor_update_every": Range(1), "target_update_every": Range(1)}


@register("curl")
class CURL(Algorithm):
    Config = CURLConfig
    paper_name = "CURL"
    family = "model-free"
    has_value = True
    description = ("CURL: contrastive encoder (bilinear W, momentum key encoder, random "
                   "crops) + SAC, on the offline dataset.")
    presets = {
        "smoke": dict(batch_size=8, feature_dim=16, hidden_dim=32, frame_stack=2),
        "quick": dict(batch_size=32, hidden_dim=256),
    }

    @classmethod
    def resolve(cls, config, source, target):
        if config.lr is None:
            config.lr = 2e-4 if "cheetah" in target.id else 1e-3
        if config.log_std_min >= config.log_std_max:
            raise ConfigError(f"curl: log_std_min={config.log_std_min} must be below "
                              f"log_std_max={config.log_std_max}.")
        return config

    def __init__(self, config: CURLConfig, ctx: RunContext):
        super().__init__(config, ctx)
        h, w, c = ctx.image_shape
        if config.crop_size > min(h, w):
            raise ConfigError(f"curl: crop_size={config.crop_size} exceeds the {h}x{w} frames.")
        dev = ctx.device
        self.critic = Critic(c * config.frame_stack, config.crop_size, config.feature_dim,
                             ctx.action_dim, config.hidden_dim, config.feature_tanh).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = Actor(self.critic.encoder.convs.out_dim, config.feature_dim, ctx.action_dim,
                           config.hidden_dim, config.feature_tanh,
                           (config.log_std_min, config.log_std_max)).to(dev)
        self.W = nn.Parameter(torch.rand(config.feature_dim, config.feature_dim, device=dev))
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature),
                                                   device=dev))
        self.target_entropy = -float(ctx.action_dim)
        self.optimizers = {
            "critic": adam(self.critic.parameters(), lr=config.lr),
            "actor": adam(self.actor.parameters(), lr=config.lr),
            "alpha": adam([self.log_alpha], lr=config.alpha_lr,
                                      betas=(config.alpha_beta1, 0.999)),
            # CURL's encoder_optimizer and cpc_optimizer: the contrastive loss steps both.
            "encoder": adam(self.critic.encoder.parameters(), lr=config.lr),
            "cpc": adam([*self.critic.encoder.parameters(), self.W], lr=config.lr)}
        self.sampler = TransitionSampler(ctx.dataset, config.batch_size, n_step=1,
                                         frame_stack=config.frame_stack,
                                         discount=config.discount, seed=ctx.seed)
        self.generator = torch.Generator().manual_seed(ctx.seed)  # crops and policy noise
        self.rngs = RandomStates(sampler=self.sampler.rng, torch=self.generator)

    # One update ----------------------------------------------------------------------

    def batch(self) -> dict[str, torch.Tensor]:
        raw = self.sampler.sample()
        dev, size = self.ctx.device, self.config.crop_size
        image = torch.as_tensor(raw["image"], device=dev)
        action = torch.as_tensor(raw["action"], device=dev).float()
        return {
            "anchor": random_crop(image, size, self.generator),
            "positive": random_crop(image, size, self.generator),
            "next": random_crop(torch.as_tensor(raw["next_image"], device=dev), size,
                                self.generator),
            "action": F.pad(action, (0, self.ctx.action_dim - action.shape[1])),
            "reward": torch.as_tensor(raw["reward"], device=dev)[:, None],
            "discount": torch.as_tensor(raw["discount"], device=dev)[:, None]}

    def sample_action(self, conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.actor(conv)
        noise = torch.randn(mu.shape, generator=self.generator).to(mu)
        return squashed_gaussian(mu, log_std, noise)

    def train_step(self, step: int) -> dict[str, float]:
        c, batch = self.config, self.batch()
        metrics = self.update(self.critic_losses, batch)
        if step % c.actor_update_every == 0:
            metrics.update(self.update(self.actor_losses, batch))
        if step % c.target_update_every == 0:
            soft_update(self.critic.q1, self.critic_target.q1, c.critic_tau)
            soft_update(self.critic.q2, self.critic_target.q2, c.critic_tau)
            soft_update(self.critic.encoder, self.critic_target.encoder, c.encoder_tau)
        metrics.update(self.update(self.contrastive_losses, batch))
        return metrics  # detached tensors, read at the logging step

    def update(self, loss_fn, batch) -> dict[str, torch.Tensor]:
        """One step of ``loss_fn``'s parts (``optimize``); its terms and metrics, detached."""
        metrics, aux = optimize(self.optimizers, loss_fn, batch)
        return {**metrics, **{k: v.detach() for k, v in aux.items()}}

    def critic_losses(self, batch):
        """Soft TD loss of both Q heads; trains the encoder and the heads."""
        with torch.no_grad():
            # a' from the actor on the online conv features; Q from the target critic,
            # whose encoder is the key encoder (CURL's update_critic)
            next_action, next_log_prob = self.sample_action(
                self.critic.encoder.convs(batch["next"]))
            next_q = torch.min(*self.critic_target(self.critic_target.encoder(batch["next"]),
                                                   next_action)).float()
            soft_value = next_q - self.log_alpha.exp() * next_log_prob
            target = batch["reward"] + batch["discount"] * soft_value
        q1, q2 = self.critic(self.critic.encoder(batch["anchor"]), batch["action"])
        q1, q2 = q1.float(), q2.float()
        return ({"critic/td": critic_loss(q1, q2, target)}, {"critic/td": 1.0},
                {"critic/q": q1.mean(), "critic/target_q": target.mean()})

    def actor_losses(self, batch):
        """Actor and temperature losses on the anchor crop, the encoder's features
        detached (computed after the critic's step, as CURL)."""
        with torch.no_grad():
            conv = self.critic.encoder.convs(batch["anchor"])
            features = self.critic.encoder.head(conv)
        action, log_prob = self.sample_action(conv)
        q = torch.min(*self.critic(features, action)).float()
        alpha = self.log_alpha.exp()
        losses = {"actor/policy": actor_loss(log_prob, q, alpha),
                  "alpha/temperature": temperature_loss(self.log_alpha, log_prob,
                                                        self.target_entropy)}
        return (losses, {"actor/policy": 1.0, "alpha/temperature": 1.0},
                {"actor/entropy": -log_prob.mean(), "alpha/value": alpha})

    def contrastive_losses(self, batch):
        """q = f(anchor), k = f_target(positive); one gradient, stepped by both the
        encoder's and the CURL module's (encoder and W) Adam, as CURL's ``update_cpc``."""
        queries = self.critic.encoder(batch["anchor"])
        with torch.no_grad():
            keys = self.critic_target.encoder(batch["positive"])
        with torch.autocast(queries.device.type, enabled=False):
            logits = contrastive_logits(queries.float(), keys.float(), self.W)
        labels = torch.arange(logits.shape[0], device=logits.device)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return ({"encoder+cpc/contrastive": contrastive_loss(logits)},
                {"encoder+cpc/contrastive": 1.0}, {"encoder/accuracy": accuracy})

    # Acting and valuing --------------------------------------------------------------

    def _observation(self, state) -> torch.Tensor:
        images = torch.as_tensor(np.concatenate(state)[None], device=self.ctx.device)
        return center_crop(images, self.config.crop_size)

    @torch.no_grad()
    def policy(self, obs, state, deterministic=True):
        state = FrameStack.update(state, obs["image"], self.config.frame_stack, obs["is_first"])
        conv = self.critic.encoder.convs(self._observation(state))
        if deterministic:
            action = torch.tanh(self.actor(conv)[0])
        else:
            action, _ = self.sample_action(conv)
        return action[0].float().cpu().numpy(), state

    @torch.no_grad()
    def value(self, obs, state):
        """min of the twin Q at the actor's mean action, on the centre crop of the frame
        stack ending at ``obs`` (``state`` as ``policy`` returned it)."""
        if state is None:
            state = FrameStack.update(None, obs["image"], self.config.frame_stack, True)
        conv = self.critic.encoder.convs(self._observation(state))
        action = torch.tanh(self.actor(conv)[0])
        return float(torch.min(*self.critic(self.critic.encoder.head(conv), action)))

    # Checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "actor": self.actor.state_dict(), "W": self.W.detach().clone(),
                "log_alpha": self.log_alpha.detach().clone(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "rngs": self.rngs.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("critic", "critic_target", "actor"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.W.copy_(state["W"])
            self.log_alpha.copy_(state["log_alpha"])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        self.rngs.load_state_dict(state["rngs"])
