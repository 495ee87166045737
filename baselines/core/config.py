"""The configuration of every DreamerV2-based agent (SPEC sections 4, 7): model
sizes, latents, learning rates, the behaviour's horizon and returns, precision; and
the small model sizes of the smoke and quick presets."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from coworld_bench.algorithm import Choice, Range, TrainConfig

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

