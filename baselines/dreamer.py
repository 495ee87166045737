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
import dataclasses
import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.nets import ELU, adam, float32_cpu, mlp
from coworld_bench.algorithm import (Choice, Range, TrainConfig, compile_backend,
                                    compiled_calls_run_eagerly)
from coworld_bench.errors import ConfigError
from coworld_bench.seeding import RandomStates

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Configuration ---------------------------------------------------------------------

@dataclasses.dataclass
class DreamerConfig(TrainConfig):
    """DreamerV2 hyperparameters; defaults are the paper's (SPEC section 4).

    Attributes:
      latent: "discrete" (paper) or "continuous" (authors' code).
      stoch: latent variables (discrete) or dimensions (continuous).
      classes: classes per discrete variable.
      deter: GRU size ("RSSM 600 units").
      hidden: size of the RSSM's other layers.
      cnn_depth: encoder/decoder base channels.
      mlp_units, mlp_layers: heads, actor and critic.
      ensemble: prior heads (1 = plain DreamerV2; Offline DV2 uses 7).
      kl_scale, kl_balance, free_nats: KL term (scale 1, balance 0.8, free nats 1).
      model_lr, actor_lr, critic_lr: Adam learning rates.
      weight_decay: decoupled weight decay per update, theta <- (1 - wd) theta, as
        DreamerV2's optimiser (V-D4RL: 1e-6).
      batch_size, seq_len: world-model batches of sequences.
      horizon: imagination horizon.
      discount, lam: gamma and lambda of the lambda-returns.
      pred_discount: learn a continuation head (False: every imagined step continues,
        V-D4RL's DMC setting).
      actor_entropy: entropy bonus weight.
      reinforce_weight: DreamerV2's rho: weight of REINFORCE; 1 - rho on dynamics
        backpropagation (the authors' code uses 0).
      slow_critic_every: updates between copies of the critic into its target.
      grad_clip: global gradient-norm clip, per optimiser.
      precision: 16 = bfloat16 autocast on CUDA (float32 on a CPU); 32 = float32.
      obs: what the world model encodes and reconstructs: "image" (64x64 pixels, conv
        encoder/decoder) or "state" (the low-dimensional state vector, MLPs).
      layer_norm: LayerNorm in the MLP heads and the RSSM's dense layers (DreamerV2's
        ``norm: layer`` option; its default, and the paper preset's, is none).
    """

    latent: str = "discrete"
    stoch: int = 32
    classes: int = 32
    deter: int = 600
    hidden: int = 600
    cnn_depth: int = 48
    mlp_units: int = 400
    mlp_layers: int = 4
    ensemble: int = 1
    kl_scale: float = 1.0
    kl_balance: float = 0.8
    free_nats: float = 1.0
    model_lr: float = 2e-4
    actor_lr: float = 4e-5
    critic_lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 50
    seq_len: int = 50
    horizon: int = 15
    discount: float = 0.995
    lam: float = 0.95
    pred_discount: bool = True
    actor_entropy: float = 1e-4
    reinforce_weight: float = 0.0
    slow_critic_every: int = 100
    grad_clip: float = 100.0
    precision: int = 16
    obs: str = "image"
    layer_norm: bool = False

    checks: ClassVar[dict[str, Range | Choice]] = {
        "latent": Choice(("discrete", "continuous")), "obs": Choice(("image", "state")),
        "precision": Choice((16, 32)),
        **{k: Range(1) for k in ("stoch", "classes", "deter", "hidden", "cnn_depth", "mlp_units",
                                  "mlp_layers", "ensemble", "batch_size", "seq_len", "horizon",
                                  "slow_critic_every")},
        **{k: Range(0, 1) for k in ("kl_balance", "lam", "reinforce_weight", "weight_decay")},
        **{k: Range(0) for k in ("kl_scale", "free_nats", "model_lr", "actor_lr", "critic_lr",
                                  "actor_entropy", "grad_clip")},
    }


# Small sizes shared by the smoke and quick presets of every DreamerV2-based algorithm.
SMOKE_MODEL = dict(stoch=4, classes=4, deter=32, hidden=32, cnn_depth=4, mlp_units=32,
                   mlp_layers=2, batch_size=4, seq_len=8, horizon=5, eval_every=0)
# The quick size learns with LayerNorm in its heads and RSSM layers and not without:
# the online agent on walker-walk scored 94 with it and 14 without at 500 updates
# (random actions: 47; benchmarks/dreamer_bench.py learning, module docstring).
QUICK_MODEL = dict(stoch=16, classes=16, deter=128, hidden=128, cnn_depth=16, mlp_units=128,
                   mlp_layers=2, batch_size=16, seq_len=32, horizon=10, model_lr=6e-4,
                   actor_lr=8e-5, critic_lr=8e-5, discount=0.99, layer_norm=True)


# Pure functions (unit-tested against hand-computed values) -------------------------

def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor,
                  lam: float) -> torch.Tensor:
    """TD(lambda) targets along an imagined trajectory s_0 .. s_H (DreamerV2 eq. 4).

    Args:
      reward: (H, ...) r_{t+1}, the reward of reaching s_{t+1}.
      value: (H+1, ...) v(s_0) .. v(s_H).
      discount: (H, ...) gamma_{t+1} = gamma x (predicted continuation of s_{t+1}).
    Returns:
      (H, ...) R_t = r_{t+1} + gamma_{t+1} ((1 - lam) v(s_{t+1}) + lam R_{t+1}),
      with R_H = v(s_H).
    """
    returns = []
    acc = value[-1]
    for t in reversed(range(reward.shape[0])):
        acc = reward[t] + discount[t] * ((1 - lam) * value[t + 1] + lam * acc)
        returns.append(acc)
    return torch.stack(returns[::-1])


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of independent categoricals, summed over variables: (..., S, C) -> (...)."""
    p_log = F.log_softmax(p_logits, -1)
    q_log = F.log_softmax(q_logits, -1)
    return (p_log.exp() * (p_log - q_log)).sum((-2, -1))


def gaussian_kl(p_mean, p_std, q_mean, q_std) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over dimensions."""
    var_ratio = (p_std / q_std) ** 2
    t1 = ((p_mean - q_mean) / q_std) ** 2
    return 0.5 * (var_ratio + t1 - 1 - torch.log(var_ratio)).sum(-1)


def kl_balance_loss(kl_fn: Callable, post: dict, prior: dict, balance: float, free: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV2's balanced KL with free nats (averaged before the free-nats floor).

    loss = balance * max(mean KL(sg(post) || prior), free)
         + (1 - balance) * max(mean KL(post || sg(prior)), free)
    The first term trains the prior towards the posterior, the second regularises
    the posterior. Returns (loss, mean KL value).
    """
    sg = lambda d: {k: v.detach() for k, v in d.items()}  # noqa: E731
    train_prior = kl_fn(sg(post), prior)
    train_post = kl_fn(post, sg(prior))
    # clamp with a Python number: no tensor copied to the device inside the update.
    loss = (balance * train_prior.mean().clamp(min=free)
            + (1 - balance) * train_post.mean().clamp(min=free))
    return loss, train_prior.mean().detach()


def ensemble_disagreement(probs: torch.Tensor) -> torch.Tensor:
    """Offline DV2's uncertainty u: mean over the K heads of the Frobenius distance
    between each head's (stoch x classes) probabilities and the heads' mean.
    ``probs``: (K, ..., S, C) -> (...)."""
    mean = probs.mean(0, keepdim=True)
    return torch.sqrt(((probs - mean) ** 2).sum((-2, -1))).mean(0)


def ewc_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """lam / 2 * sum_i F_i (theta_i - theta*_i)^2 (elastic weight consolidation)."""
    total = sum((fisher[k] * (params[k] - anchors[k]) ** 2).sum() for k in fisher)
    return 0.5 * lam * total


def diagonal_fisher(params: dict[str, torch.Tensor], sample_losses) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher, F_i = mean over samples s of (d l_s / d theta_i)^2:
    each sample's negative log-likelihood ``l_s`` (scalars from the iterable
    ``sample_losses``) differentiated on its own, its gradient squared, then averaged.
    (The square of a batch-mean gradient is not this: it is ~F / N at batch N.) The
    brute-force form, one backward pass per sample; ``vmap_diagonal_fisher`` computes
    the same for a module applied row by row."""
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for loss in sample_losses:
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (k, _), g in zip(params.items(), grads):
            if g is not None:
                fisher[k] += g.detach() ** 2
        n += 1
    return {k: v / max(n, 1) for k, v in fisher.items()}


def vmap_diagonal_fisher(module: nn.Module, row_loss: Callable[..., torch.Tensor],
                         inputs: list[tuple[torch.Tensor, ...]], chunk_size: int = 1024
                         ) -> dict[str, torch.Tensor]:
    """``diagonal_fisher`` of ``module``'s trainable parameters where every row of the
    ``inputs`` tensors is one sample: ``row_loss(forward, *row)`` is that sample's
    negative log-likelihood, ``forward`` the module called with the parameters being
    differentiated. Per-sample gradients come from ``torch.func.vmap`` over
    ``torch.func.grad`` (in chunks of ``chunk_size`` rows), not from a loop.
    ``inputs``: one tuple of (N, ...) tensors per batch; the mean is over all rows."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in module.named_parameters() if p.requires_grad}

    def one(theta, *row):
        forward = lambda x: functional_call(module, theta, (x[None],))[0]  # noqa: E731
        return row_loss(forward, *row)

    per_sample = vmap(grad(one), in_dims=(None, *([0] * len(inputs[0]))), chunk_size=chunk_size)
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for tensors in inputs:
        grads = per_sample(params, *tensors)
        for k in fisher:
            fisher[k] += (grads[k] ** 2).sum(0)
        n += tensors[0].shape[0]
    return {k: v / max(n, 1) for k, v in fisher.items()}


def categorical_sample(probs: torch.Tensor) -> torch.Tensor:
    """One index per row of ``probs`` (..., classes), drawn by inverting the cumulative
    distribution: the number of cumulative probabilities below a uniform draw. It is
    distributed as ``torch.distributions.Categorical(probs).sample()``, with one uniform
    draw per row instead of ``torch.multinomial``'s exponential draw per class (about
    10x faster on a CPU at a posterior's (256, 16, 16)), no host synchronisation, and
    no second softmax. The index is clamped for a last cumulative value rounded below
    the draw."""
    uniform = torch.rand(*probs.shape[:-1], 1, dtype=probs.dtype, device=probs.device)
    index = (probs.cumsum(-1) < uniform).sum(-1)
    return index.clamp_max(probs.shape[-1] - 1)


# Networks --------------------------------------------------------------------------

class ConvELU(ELU):
    """ELU for the image encoder's and decoder's feature maps: the CPU float32 kernel
    of ``baselines.nets.ELU`` at every size (the maps are always large)."""

    min_size = 0


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight of a stride-2 transposed conv, (in, out, k, k), as that of a stride-1
    conv with kernel ceil(k / 2) and 4 x out channels (row parity, column parity, out),
    whose outputs, interleaved, are the transposed conv's: output row 2p + a gathers
    input rows p - t with kernel rows a + 2t, t < ceil(k / 2). Odd k is padded with a
    zero tap."""
    c_in, c_out, k, _ = weight.shape
    if k % 2:
        weight = F.pad(weight, (0, 1, 0, 1))
    taps = (k + 1) // 2
    weight = weight.reshape(c_in, c_out, taps, 2, taps, 2).flip(2, 4)  # tap t -> taps-1-t
    return weight.permute(3, 5, 1, 0, 2, 4).reshape(4 * c_out, c_in, taps, taps)


class _SubpixelTransposedConv(torch.autograd.Function):
    """A stride-2 transposed conv computed forward as a stride-1 conv (``subpixel_weight``)
    and a pixel interleave, with torch's transposed-conv backward. On a CPU oneDNN's
    transposed-conv forward is slow where outputs have few channels: the decoder's
    last layer (16 -> 3, 30 -> 64, batch 256) takes 27 ms forward, its conv form 9 ms,
    and the backward (4.8 + 7.9 ms) is already a plain conv."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        c_out, k = weight.shape[1], weight.shape[-1]
        pad = (k + 1) // 2 - 1
        y = F.conv2d(F.pad(x, (pad, pad, pad, pad)), subpixel_weight(weight), bias.repeat(4))
        n, _, h, w = y.shape
        y = (y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c_out).transpose(2, 3)
             .reshape(n, 2 * h, 2 * w, c_out).permute(0, 3, 1, 2))  # channels-last
        if k % 2:
            y = y[:, :, :-1, :-1]
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[1]], [2, 2], [0, 0], [1, 1], True, [0, 0], 1,
            list(ctx.needs_input_grad))


class StrideTwoTransposedConv(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d(in, out, k, 2)`` (same parameters and state dict), run in
    its conv form on CPU float32 (``_SubpixelTransposedConv``) where that is faster,
    stock elsewhere."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(c_in, c_out, kernel, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float32_cpu(x):
            return _SubpixelTransposedConv.apply(x, self.weight, self.bias)
        return super().forward(x)


class ConvEncoder(nn.Module):
    """DreamerV2's 64x64 encoder: 4 convs, kernel 4, stride 2, depth x (1, 2, 4, 8)."""

    def __init__(self, depth: int):
        super().__init__()
        layers, c = [], 3
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, depth * mult, 4, 2), ConvELU()]
            c = depth * mult
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = depth * 8 * 2 * 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 64, 64, 3) -> (..., out_dim)."""
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """DreamerV2's 64x64 decoder: linear, 4 transposed convs (kernels 5, 5, 6, 6)."""

    def __init__(self, feat_dim: int, depth: int):
        super().__init__()
        self.depth = depth
        self.linear = nn.Linear(feat_dim, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, 2), ConvELU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, 2), ConvELU(),
            nn.ConvTranspose2d(2 * depth, depth, 6, 2), ConvELU(),
            StrideTwoTransposedConv(depth, 3, 6))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., feat) -> image mean (..., 64, 64, 3) in [-0.5, 0.5] units, float32."""
        lead = feat.shape[:-1]
        x = self.linear(feat.reshape(-1, feat.shape[-1]))
        # The first transposed conv sees a 1x1 input, so it is a matrix product: each
        # input channel adds its weight's (out, k, k) block, scaled. Run as one (a conv
        # kernel is ~10x slower at this shape), with the weights ordered (k, k, out) so
        # that the result is channels-last, the layout the other convs run fastest in
        # (and the NHWC image the loss wants is then a view).
        first = self.net[0]
        c_in, c_out, k, _ = first.weight.shape
        weight = first.weight.permute(0, 2, 3, 1).reshape(c_in, k * k * c_out)
        h = torch.addmm(first.bias.repeat(k * k), x, weight)
        h = h.reshape(-1, k, k, c_out).permute(0, 3, 1, 2)
        return self.net[1:](h).permute(0, 2, 3, 1).reshape(*lead, 64, 64, 3).float()


class VectorEncoder(nn.Module):
    """Encoder of low-dimensional state vectors, DreamerV2's MLP encoder: ``layers``
    dense layers of ``units``, each followed by (LayerNorm and) ELU; the embedding is
    the last activation, not a bare linear output."""

    def __init__(self, in_dim: int, units: int, layers: int, norm: bool = False):
        super().__init__()
        mods, d = [], in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, units), *([nn.LayerNorm(units)] if norm else []), ELU()]
            d = units
        self.net = nn.Sequential(*mods)
        self.out_dim = units

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state.float())


class LayerNormGRU(nn.Module):
    """DreamerV2's GRU cell: one dense layer on [x, h] (with bias, as in DreamerV2 and
    the authors' code), LayerNorm over its three parts, and an update-gate bias of -1 so that the state is mostly kept at
    initialisation. The new state is float32 whatever the autocast."""

    def __init__(self, in_dim: int, size: int, update_bias: float = -1.0):
        super().__init__()
        self.linear = nn.Linear(in_dim + size, 3 * size)
        self.norm = nn.LayerNorm(3 * size)
        self.update_bias = update_bias

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        parts = self.norm(self.linear(torch.cat([x, h.to(x.dtype)], -1))).float()
        reset, cand, update = parts.chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update + self.update_bias)
        return update * cand + (1 - update) * h.float()


class RSSM(nn.Module):
    """Recurrent state-space model; states are dicts of float32 tensors."""

    def __init__(self, cfg: DreamerConfig, action_dim: int, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.discrete = cfg.latent == "discrete"
        if cfg.latent not in ("discrete", "continuous"):
            raise ConfigError(f"latent must be 'discrete' or 'continuous', got {cfg.latent!r}.")
        self.stoch_dim = cfg.stoch * cfg.classes if self.discrete else cfg.stoch
        stats = self.stoch_dim if self.discrete else 2 * cfg.stoch
        norm = cfg.layer_norm
        self.img_in = nn.Sequential(nn.Linear(self.stoch_dim + action_dim, cfg.hidden),
                                    *([nn.LayerNorm(cfg.hidden)] if norm else []), ELU())
        self.gru = LayerNormGRU(cfg.hidden, cfg.deter)
        self.prior_heads = nn.ModuleList(mlp(cfg.deter, cfg.hidden, 1, stats, norm=norm)
                                         for _ in range(cfg.ensemble))
        self.post_head = mlp(cfg.deter + embed_dim, cfg.hidden, 1, stats, norm=norm)

    @property
    def feat_dim(self) -> int:
        return self.stoch_dim + self.cfg.deter

    def initial(self, batch: int, device) -> dict:
        return {"deter": torch.zeros(batch, self.cfg.deter, device=device),
                "stoch": torch.zeros(batch, self.stoch_dim, device=device)}

    def _stats(self, raw: torch.Tensor) -> dict:
        raw = raw.float()  # distribution parameters are float32 (SPEC section 7)
        if self.discrete:
            return {"logits": raw.reshape(*raw.shape[:-1], self.cfg.stoch, self.cfg.classes)}
        mean, std = raw.chunk(2, -1)
        return {"mean": mean, "std": 2 * torch.sigmoid(std / 2) + 0.1}  # DreamerV2's sigmoid2

    def sample(self, stats: dict, deterministic: bool = False) -> torch.Tensor:
        if self.discrete:
            logits = stats["logits"]
            probs = logits.softmax(-1)
            if deterministic:
                index = probs.argmax(-1)
            else:
                index = categorical_sample(probs)
            # scatter, not F.one_hot: one_hot checks the indices on the host.
            onehot = torch.zeros_like(probs).scatter_(-1, index[..., None], 1.0)
            sample = onehot + probs - probs.detach()  # straight-through gradients
            return sample.reshape(*sample.shape[:-2], -1)
        if deterministic:
            return stats["mean"]
        return stats["mean"] + stats["std"] * torch.randn_like(stats["std"])

    def kl(self, p: dict, q: dict) -> torch.Tensor:
        if self.discrete:
            return categorical_kl(p["logits"], q["logits"])
        return gaussian_kl(p["mean"], p["std"], q["mean"], q["std"])

    def img_step(self, state: dict, action: torch.Tensor, head: int = 0,
                 all_heads: bool = False, deterministic: bool = False) -> dict:
        """Prior step from ``head`` (Offline DV2 draws one per step). ``all_heads`` also
        returns every head's statistics, stacked (K, ...) under ``heads``."""
        x = self.img_in(torch.cat([state["stoch"], action], -1))
        deter = self.gru(x, state["deter"])
        if all_heads:
            raws = torch.stack([h(deter) for h in self.prior_heads])
            stats = self._stats(raws[head])
            extra = {"heads": self._stats(raws)}
        else:
            stats, extra = self._stats(self.prior_heads[head](deter)), {}
        return {"deter": deter, "stoch": self.sample(stats, deterministic), **stats, **extra}

    def obs_step(self, state: dict, action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor | None = None, head: int = 0,
                 deterministic: bool = False) -> tuple[dict, dict]:
        if is_first is not None:  # a new episode starts from the initial state, no action
            keep = (~is_first).float()[:, None]
            state = {"deter": state["deter"] * keep, "stoch": state["stoch"] * keep}
            action = action * keep
        prior = self.img_step(state, action, head=head, deterministic=deterministic)
        stats = self._stats(self.post_head(torch.cat([prior["deter"].to(embed.dtype), embed], -1)))
        post = {"deter": prior["deter"], "stoch": self.sample(stats, deterministic), **stats}
        return post, prior

    def observe(self, embed, action, is_first, state=None, heads=None):
        """Runs the posterior along (B, T) sequences; returns stacked post and prior.

        ``action[:, t]`` led to observation t (row 0's is zero), as stored in datasets.
        A window without a ``state`` starts from the initial state and a zero action
        whether or not it starts at an episode's reset (DreamerV2's replay does the
        same). ``heads[t]``: the prior head of step t (default head 0).
        """
        b, t = embed.shape[:2]
        if state is None:
            state = self.initial(b, embed.device)
            is_first = is_first.clone()
            is_first[:, 0] = True
        posts, priors = [], []
        for i in range(t):
            head = 0 if heads is None else int(heads[i])
            post, prior = self.obs_step(state, action[:, i], embed[:, i], is_first[:, i], head)
            posts.append(post)
            priors.append(prior)
            state = post
        stack = lambda seq: {k: torch.stack([s[k] for s in seq], 1) for k in seq[0]}  # noqa: E731
        return stack(posts), stack(priors)

    @staticmethod
    def feat(state: dict) -> torch.Tensor:
        return torch.cat([state["stoch"], state["deter"]], -1)


class WorldModel(nn.Module):
    """Encoder, RSSM and heads, with DreamerV2's loss. Encodes images, or state vectors
    when ``cfg.obs == "state"`` (then ``state_dim`` is needed)."""

    def __init__(self, cfg: DreamerConfig, action_dim: int, state_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.obs not in ("image", "state"):
            raise ConfigError(f"obs must be 'image' or 'state', got {cfg.obs!r}.")
        self.obs_key = cfg.obs
        if cfg.obs == "image":
            self.encoder = ConvEncoder(cfg.cnn_depth)
        else:
            if not state_dim:
                raise ConfigError("A state world model needs the state dimension.")
            self.encoder = VectorEncoder(state_dim, cfg.mlp_units, cfg.mlp_layers,
                                         norm=cfg.layer_norm)
        self.rssm = RSSM(cfg, action_dim, self.encoder.out_dim)
        feat, norm = self.rssm.feat_dim, cfg.layer_norm
        self.decoder = (ConvDecoder(feat, cfg.cnn_depth) if cfg.obs == "image"
                        else mlp(feat, cfg.mlp_units, cfg.mlp_layers, state_dim, norm=norm))
        self.reward = mlp(feat, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm)
        self.cont = (mlp(feat, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm) if cfg.pred_discount
                     else None)

    def embed(self, batch: dict) -> torch.Tensor:
        return self.encoder(batch[self.obs_key])

    def reward_of(self, feat: torch.Tensor) -> torch.Tensor:
        """Predicted reward (mean of a unit Gaussian), float32: (..., F) -> (...)."""
        return self.reward(feat)[..., 0].float()

    def cont_logits(self, feat: torch.Tensor) -> torch.Tensor:
        return self.cont(feat)[..., 0].float()

    def cont_of(self, feat: torch.Tensor) -> torch.Tensor:
        """Predicted continuation probability, float32 (1 without a discount head)."""
        if self.cont is None:
            return torch.ones(feat.shape[:-1], device=feat.device)
        return torch.sigmoid(self.cont_logits(feat))

    def kl_loss(self, post: dict, prior: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced KL between the posterior and the prior of each step's head."""
        keys = ("logits",) if self.rssm.discrete else ("mean", "std")
        return kl_balance_loss(self.rssm.kl, {k: post[k] for k in keys},
                               {k: prior[k] for k in keys}, self.cfg.kl_balance,
                               self.cfg.free_nats)

    def loss(self, batch: dict, heads=None) -> tuple[Losses, dict, dict]:
        """DreamerV2's world-model loss terms on a (B, T) batch of torch tensors.

        Returns (losses, posterior, metrics). Terms, each averaged over batch and time:
        ``model/image`` -log N(x; x_hat, 1) summed over pixels (or state entries),
        ``model/reward`` -log N(r; r_hat, 1), ``model/cont`` the continuation's
        Bernoulli NLL (with a discount head), ``model/kl`` the balanced KL. Constants
        of the Gaussian NLLs are dropped. ``heads``: the prior head of each step.
        """
        embed = self.embed(batch)
        post, prior = self.rssm.observe(embed, batch["action"], batch["is_first"], heads=heads)
        return self.terms(batch, embed, post, prior)

    def terms(self, batch: dict, embed: torch.Tensor, post: dict, prior: dict
              ) -> tuple[Losses, dict, dict]:
        """``loss``'s terms from the batch's embedding and its posterior and prior
        (for callers that ran the encoder and the RSSM on more than this batch)."""
        feat = self.rssm.feat(post)
        if self.obs_key == "image":
            target = batch["image"].float() / 255.0 - 0.5
            recon = 0.5 * ((self.decoder(feat) - target) ** 2).sum((-3, -2, -1)).mean()
        else:
            recon = 0.5 * ((self.decoder(feat).float() - batch["state"]) ** 2).sum(-1).mean()
        losses = {"model/image": recon,
                  "model/reward": 0.5 * ((self.reward_of(feat) - batch["reward"]) ** 2).mean()}
        if self.cont is not None:
            losses["model/cont"] = F.binary_cross_entropy_with_logits(self.cont_logits(feat),
                                                                      batch["discount"])
        losses["model/kl"], kl_value = self.kl_loss(post, prior)
        return losses, post, {"kl": kl_value, "embed": embed}


class TruncNormal:
    """DreamerV2's and the authors' ``trunc_normal`` action distribution (SPEC 7b): a
    Normal with mean tanh(x) and std 2 sigmoid(s / 2) + 0.1 (both made by
    ``ActorCritic.policy``), whose reparameterised sample is clipped into
    [-(1 - clip), 1 - clip] with a straight-through gradient (the value of the clipped
    sample, the gradient of the unclipped one), as the authors' ``SafeTruncatedNormal``.
    log pi and the entropy are the Normal's: analytic, so the entropy bonus carries
    gradient and is bounded below by the std floor of 0.1 per dimension. Nothing here
    calls atanh, so a saturated mean stays finite under bfloat16. Parameters are float32
    (SPEC section 7)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, clip: float = 1e-6):
        self.mean, self.std, self.clip = mean.float(), std.float(), clip

    def rsample(self) -> torch.Tensor:
        sample = self.mean + self.std * torch.randn_like(self.mean)
        clipped = sample.clamp(-1.0 + self.clip, 1.0 - self.clip)
        return sample + (clipped - sample).detach()

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """The Normal's log-density of ``action``, summed over its dimensions."""
        z = (action.float() - self.mean) / self.std
        return (-0.5 * z ** 2 - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        """The Normal's entropy, sum of 1/2 log(2 pi e std^2) over the dimensions."""
        return (self.std.log() + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


class ActorCritic(nn.Module):
    """DreamerV2 behaviour learning in imagination: actor, critic and slow critic,
    with their optimisers (parts ``actor`` and ``critic``)."""

    def __init__(self, cfg: DreamerConfig, feat_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        norm = cfg.layer_norm
        self.actor = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 2 * action_dim, norm=norm)
        self.critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm)
        self.slow_critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1, norm=norm)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        self.updates = 0
        self.optimizers = {
            "actor": Optimizer(self.actor.parameters(), cfg.actor_lr, cfg.grad_clip,
                               cfg.weight_decay),
            "critic": Optimizer(self.critic.parameters(), cfg.critic_lr, cfg.grad_clip,
                                cfg.weight_decay)}

    def policy(self, feat: torch.Tensor) -> TruncNormal:
        return self.policy_of(self.actor(feat))

    @staticmethod
    def policy_of(raw: torch.Tensor) -> TruncNormal:
        """The action distribution of the actor's output: mean tanh(x), std
        2 sigmoid(s / 2) + 0.1 (DreamerV2's ``trunc_normal`` head)."""
        mean, std = raw.float().chunk(2, -1)
        return TruncNormal(torch.tanh(mean), 2 * torch.sigmoid(std / 2) + 0.1)

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        return self.critic(feat)[..., 0].float()

    def imagine(self, world_model: WorldModel, start: dict, horizon: int,
                heads: list[int] | None = None, all_heads: bool = False) -> dict:
        """Rolls the actor out in the model from flattened start states (no grad into
        the start). Returns feats (H+1, N, F), actions (H, N, A), the policy's mean and
        std at each step (so the loss does not run the actor again) and the prior
        states. ``heads[t]``: the prior head of step t."""
        rssm = world_model.rssm
        state = {"deter": start["deter"].detach(), "stoch": start["stoch"].detach()}
        feats, states = [rssm.feat(state)], [state]
        out = {"action": [], "mean": [], "std": []}
        for t in range(horizon):
            policy = self.policy(feats[-1].detach())
            action = policy.rsample()
            head = 0 if heads is None else int(heads[t])
            state = rssm.img_step(state, action, head=head, all_heads=all_heads)
            feats.append(rssm.feat(state))
            states.append(state)
            for key, value in (("action", action), ("mean", policy.mean), ("std", policy.std)):
                out[key].append(value)
        return {"feat": torch.stack(feats), "states": states,
                **{k: torch.stack(v) for k, v in out.items()}}

    def loss(self, traj: dict, reward: torch.Tensor, cont: torch.Tensor
             ) -> tuple[Losses, dict]:
        """DreamerV2's actor and critic loss terms on an imagined trajectory.

        ``reward``: (H, N) r_{t+1} of reaching each imagined state (penalised or
        relabelled by the caller); ``cont``: (H, N) continuation of each. Terms:
        ``actor/return`` -(rho log pi(a) sg(R - v_slow) + (1 - rho) R), ``actor/entropy``
        -H[pi], ``critic/value`` 1/2 (v - sg(R))^2, each weighted by the cumulative
        discount and averaged. Returns (losses, aux) where aux carries the critic's
        ``value`` (with gradient) and the ``weight`` for terms an algorithm adds.
        """
        cfg = self.cfg
        feat = traj["feat"]
        reward, discount = reward.float(), cfg.discount * cont.float()
        slow_value = self.slow_critic(feat)[..., 0].float()
        target = lambda_return(reward, slow_value, discount, cfg.lam)  # (H, N), float32
        weight = torch.cumprod(torch.cat([torch.ones_like(discount[:1]), discount[:-1]]), 0
                               ).detach()
        policy = TruncNormal(traj["mean"], traj["std"])
        rho = cfg.reinforce_weight
        objective = (1 - rho) * target
        if rho:
            advantage = (target - slow_value[:-1]).detach()
            objective = objective + rho * policy.log_prob(traj["action"].detach()) * advantage
        entropy = policy.entropy()
        value = self.value(feat[:-1].detach())
        losses = {"actor/return": -(weight * objective).mean(),
                  "actor/entropy": -(weight * entropy).mean(),
                  "critic/value": (weight * 0.5 * (value - target.detach()) ** 2).mean()}
        aux = {"value": value, "weight": weight, "target": target, "reward": reward,
               "discount": discount, "slow_value": slow_value, "entropy": entropy.detach(),
               "std": traj["std"].detach()}
        return losses, aux

    def scales(self) -> Scales:
        return {"actor/return": 1.0, "actor/entropy": self.cfg.actor_entropy,
                "critic/value": 1.0}

    def update_slow(self) -> None:
        self.updates += 1
        if self.updates % self.cfg.slow_critic_every == 0:
            self.slow_critic.load_state_dict(self.critic.state_dict())

    def optimizer_state(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


# Optimisation: one place for every update ------------------------------------------

class Optimizer:
    """Adam (eps 1e-5) of one part with DreamerV2's global-norm clip and decoupled
    weight decay theta <- (1 - wd) theta per update (AdamW with wd / lr)."""

    def __init__(self, params, lr: float, clip: float, weight_decay: float = 0.0):
        self.params = [p for p in params]
        self.clip = clip
        self.opt = adam(self.params, lr=lr, eps=1e-5,
                        weight_decay=weight_decay / lr if weight_decay else 0.0)

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


def precision(cfg: DreamerConfig, device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when ``precision == 16``; otherwise no change, so an
    autocast the caller opened (e.g. ``torch.autocast("cpu", torch.bfloat16)`` in the
    tests, the same code path as CUDA's) stays in force."""
    if torch.device(device).type == "cuda" and cfg.precision == 16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


LossFn = Callable[..., tuple[Losses, Scales, Any]]


def optimize(optimizers: dict[str, Optimizer], cfg: DreamerConfig, device, loss_fn: LossFn,
             *args, **kwargs) -> tuple[dict[str, torch.Tensor], Any]:
    """One update: runs ``loss_fn(*args, **kwargs) -> (losses, scales, aux)`` under the
    run's precision, then one backward pass through sum_k scales[k] * losses[k] and a
    clipped step of each part's optimiser. A term ``part/name`` trains the optimiser
    ``part``; every term needs a scale and a known part, and every scale of a part
    being trained needs its term (a forgotten term is an error, not a silent zero).
    Returns the metrics (``part/name`` values and ``part/grad_norm``, detached
    tensors) and ``aux``."""
    with precision(cfg, device):
        losses, scales, aux = loss_fn(*args, **kwargs)
    parts = sorted({key.split("/")[0] for key in losses})
    unknown = [p for p in parts if p not in optimizers]
    missing = [k for k in losses if k not in scales]
    unused = [k for k in scales if k.split("/")[0] in parts and k not in losses]
    if unknown or missing or unused:
        raise ValueError(f"Loss terms and scales disagree: parts without an optimiser "
                         f"{unknown}, terms without a scale {missing}, scales without a term "
                         f"{unused} (optimisers: {sorted(optimizers)}).")
    for key, value in losses.items():
        if value.dim() or value.dtype != torch.float32:
            raise TypeError(f"Loss term {key} must be a float32 scalar, got {value.dtype} "
                            f"{tuple(value.shape)}.")
    total = sum(scales[k] * v for k, v in losses.items() if scales[k] != 0)
    for part in parts:
        optimizers[part].opt.zero_grad(set_to_none=True)
    metrics = {k: v.detach() for k, v in losses.items()}
    if torch.is_tensor(total) and total.requires_grad:
        total.backward()
    for part in parts:
        opt = optimizers[part]
        metrics[f"{part}/grad_norm"] = nn.utils.clip_grad_norm_(opt.params, opt.clip)
        opt.opt.step()
    return metrics, aux


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


# Compilation (the GPU path) ------------------------------------------------------------

class Compiled:
    """``torch.compile(fn)`` with static shapes, falling back to ``fn`` (once, with a
    warning) if compilation fails; calls with per-step prior heads (Offline DV2's
    random draws, which would recompile every call) run eagerly."""

    def __init__(self, fn: Callable, backend: str, name: str):
        self.eager, self.name, self.failed = fn, name, False
        self.compiled = torch.compile(fn, backend=backend, dynamic=False)

    def __call__(self, *args, **kwargs):
        if self.failed or compiled_calls_run_eagerly() or kwargs.get("heads") is not None \
                or kwargs.get("all_heads"):
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly
            import warnings

            warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: "
                          f"{str(e)[:200]}); running it eagerly.")
            self.failed = True
            return self.eager(*args, **kwargs)


class DreamerAgent(nn.Module):
    """World model + actor-critic + optimisers: one DreamerV2 agent.

    ``model_loss`` and ``behaviour_loss`` are the loss functions of the two halves
    of a DreamerV2 update; ``optimize`` runs any loss function over this agent's parts
    (``model``, ``actor``, ``critic``). ``train_model`` / ``train_behaviour`` are plain
    DreamerV2's two halves; algorithms write their own loss functions from the same
    pieces and add their terms.
    """

    def __init__(self, cfg: DreamerConfig, action_dim: int, device, seed: int,
                 state_dim: int | None = None):
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
        backend = compile_backend()  # the run's --compile (default: inductor on CUDA)
        if backend:  # the two sequential loops of every update
            self.wm.rssm.observe = Compiled(self.wm.rssm.observe, backend, "RSSM.observe")
            self.ac.imagine = Compiled(self.ac.imagine, backend, "imagination")
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
        return optimize(optimizers or self.optimizers, self.cfg, self.device, loss_fn,
                        *args, **kwargs)

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


def behaviour_metrics(aux: dict) -> dict[str, torch.Tensor]:
    """Logged summaries of an actor-critic loss's aux (detached tensors)."""
    return {"critic/value_mean": aux["value"].detach().mean(),
            "critic/target_mean": aux["target"].detach().mean(),
            "actor/entropy_mean": aux["entropy"].mean(),
            "actor/std_mean": aux["std"].mean(),
            "imagined/reward_mean": aux["reward"].detach().mean()}
