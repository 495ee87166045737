"""The DreamerV2 core shared by CoWorld and the model-based baselines (SPEC section 4).

World model (DreamerV2): h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) (GRU); e_t = enc(o_t);
posterior z_t ~ q(h_t, e_t); prior z_t ~ p(h_t) (optionally an ensemble of K prior
heads sharing the recurrent core, for Offline DV2); heads for the image, reward and
discount. Latents are discrete (32 variables x 32 classes, the paper) or Gaussian
(the authors' code).

Behaviour (DreamerV2): the actor imagines ``horizon`` steps from every posterior
state; the critic regresses lambda-returns computed with a slow target critic; the
actor maximises them by dynamics backpropagation and/or REINFORCE, plus entropy.

Deviation, documented: DreamerV2's truncated-normal action distribution is replaced
by a tanh-squashed normal (torch has no truncated normal); both keep actions in
[-1, 1] and have a reparameterised sample.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from coworld_bench.algorithm import TrainConfig


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
      batch_size, seq_len: world-model batches of sequences.
      horizon: imagination horizon.
      discount, lam: gamma and lambda of the lambda-returns.
      actor_entropy: entropy bonus weight.
      reinforce_weight: DreamerV2's rho: weight of REINFORCE; 1 - rho on dynamics
        backpropagation (the authors' code uses 0).
      slow_critic_every: updates between copies of the critic into its target.
      grad_clip: global gradient-norm clip.
      precision: 16 = bfloat16 autocast on CUDA; 32 = full precision.
      obs: what the world model encodes and reconstructs: "image" (64x64 pixels, conv
        encoder/decoder) or "state" (the low-dimensional state vector, MLPs).
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
    batch_size: int = 50
    seq_len: int = 50
    horizon: int = 15
    discount: float = 0.995
    lam: float = 0.95
    actor_entropy: float = 1e-4
    reinforce_weight: float = 0.0
    slow_critic_every: int = 100
    grad_clip: float = 100.0
    precision: int = 16
    obs: str = "image"


# Small sizes shared by the smoke and quick presets of every DreamerV2-based algorithm.
SMOKE_MODEL = dict(stoch=4, classes=4, deter=32, hidden=32, cnn_depth=4, mlp_units=32,
                   mlp_layers=2, batch_size=4, seq_len=8, horizon=5, eval_every=0)
QUICK_MODEL = dict(stoch=16, classes=16, deter=128, hidden=128, cnn_depth=16, mlp_units=128,
                   mlp_layers=2, batch_size=16, seq_len=32, horizon=10, model_lr=6e-4,
                   actor_lr=8e-5, critic_lr=8e-5, discount=0.99)


# Pure functions (unit-tested against hand-computed values) -------------------------

def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor,
                  lam: float) -> torch.Tensor:
    """TD(lambda) targets along an imagined trajectory s_0 .. s_H.

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
    free_t = torch.tensor(free, device=train_prior.device)
    loss = (balance * torch.maximum(train_prior.mean(), free_t)
            + (1 - balance) * torch.maximum(train_post.mean(), free_t))
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


def diagonal_fisher(params: dict[str, torch.Tensor], loss_fn: Callable[[object], torch.Tensor],
                    batches) -> dict[str, torch.Tensor]:
    """Diagonal Fisher: mean over batches of the squared gradient of ``loss_fn(batch)``
    (a negative log-likelihood) with respect to each parameter."""
    fisher = {k: torch.zeros_like(p) for k, p in params.items()}
    n = 0
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(batch), list(params.values()), allow_unused=True)
        for (k, _), g in zip(params.items(), grads):
            if g is not None:
                fisher[k] += g.detach() ** 2
        n += 1
    return {k: v / max(n, 1) for k, v in fisher.items()}


# Networks --------------------------------------------------------------------------

def mlp(in_dim: int, units: int, layers: int, out_dim: int) -> nn.Sequential:
    mods, d = [], in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, units), nn.LayerNorm(units), nn.ELU()]
        d = units
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class ConvEncoder(nn.Module):
    """DreamerV2's 64x64 encoder: 4 convs, kernel 4, stride 2, depth x (1, 2, 4, 8)."""

    def __init__(self, depth: int):
        super().__init__()
        layers, c = [], 3
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, depth * mult, 4, 2), nn.ELU()]
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
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, 2), nn.ELU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, 2), nn.ELU(),
            nn.ConvTranspose2d(2 * depth, depth, 6, 2), nn.ELU(),
            nn.ConvTranspose2d(depth, 3, 6, 2))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., feat) -> image mean (..., 64, 64, 3) in [-0.5, 0.5] units."""
        lead = feat.shape[:-1]
        x = self.linear(feat.reshape(-1, feat.shape[-1]))[:, :, None, None]
        return self.net(x).permute(0, 2, 3, 1).reshape(*lead, 64, 64, 3)


class RSSM(nn.Module):
    """Recurrent state-space model; states are dicts of tensors."""

    def __init__(self, cfg: DreamerConfig, action_dim: int, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.discrete = cfg.latent == "discrete"
        if cfg.latent not in ("discrete", "continuous"):
            raise ValueError(f"latent must be 'discrete' or 'continuous', got {cfg.latent!r}.")
        self.stoch_dim = cfg.stoch * cfg.classes if self.discrete else cfg.stoch
        stats = self.stoch_dim if self.discrete else 2 * cfg.stoch
        self.img_in = nn.Sequential(nn.Linear(self.stoch_dim + action_dim, cfg.hidden),
                                    nn.LayerNorm(cfg.hidden), nn.ELU())
        self.gru = nn.GRUCell(cfg.hidden, cfg.deter)
        self.prior_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.deter, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.ELU(),
                          nn.Linear(cfg.hidden, stats)) for _ in range(cfg.ensemble))
        self.post_head = nn.Sequential(nn.Linear(cfg.deter + embed_dim, cfg.hidden),
                                       nn.LayerNorm(cfg.hidden), nn.ELU(),
                                       nn.Linear(cfg.hidden, stats))

    @property
    def feat_dim(self) -> int:
        return self.stoch_dim + self.cfg.deter

    def initial(self, batch: int, device) -> dict:
        state = {"deter": torch.zeros(batch, self.cfg.deter, device=device),
                 "stoch": torch.zeros(batch, self.stoch_dim, device=device)}
        return state

    def _stats(self, raw: torch.Tensor) -> dict:
        if self.discrete:
            return {"logits": raw.reshape(*raw.shape[:-1], self.cfg.stoch, self.cfg.classes)}
        mean, std = raw.chunk(2, -1)
        return {"mean": mean, "std": F.softplus(std) + 0.1}

    def sample(self, stats: dict, deterministic: bool = False) -> torch.Tensor:
        if self.discrete:
            logits = stats["logits"]
            probs = logits.softmax(-1)
            if deterministic:
                index = probs.argmax(-1)
            else:
                index = torch.distributions.Categorical(logits=logits).sample()
            onehot = F.one_hot(index, self.cfg.classes).to(probs.dtype)
            sample = onehot + probs - probs.detach()  # straight-through gradients
            return sample.reshape(*sample.shape[:-2], -1)
        if deterministic:
            return stats["mean"]
        return stats["mean"] + stats["std"] * torch.randn_like(stats["std"])

    def kl(self, p: dict, q: dict) -> torch.Tensor:
        if self.discrete:
            return categorical_kl(p["logits"], q["logits"])
        return gaussian_kl(p["mean"], p["std"], q["mean"], q["std"])

    def img_step(self, state: dict, action: torch.Tensor, head: torch.Tensor | int | None = None,
                 deterministic: bool = False) -> dict:
        """Prior step. ``head``: which ensemble head samples z (int, or a (B,) index
        tensor; None = head 0). The stats of every head are kept under ``heads``."""
        x = self.img_in(torch.cat([state["stoch"], action], -1))
        deter = self.gru(x, state["deter"])
        raws = torch.stack([h(deter) for h in self.prior_heads])  # (K, B, stats)
        if head is None:
            head = 0
        if isinstance(head, int):
            raw = raws[head]
        else:
            raw = raws[head, torch.arange(raws.shape[1], device=raws.device)]
        stats = self._stats(raw)
        return {"deter": deter, "stoch": self.sample(stats, deterministic), **stats,
                "heads": self._stats(raws)}

    def obs_step(self, state: dict, action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor | None = None, deterministic: bool = False
                 ) -> tuple[dict, dict]:
        if is_first is not None:  # a new episode starts from the initial state
            keep = (~is_first).float()[:, None]
            state = {"deter": state["deter"] * keep, "stoch": state["stoch"] * keep}
            action = action * keep
        prior = self.img_step(state, action, deterministic=deterministic)
        stats = self._stats(self.post_head(torch.cat([prior["deter"], embed], -1)))
        post = {"deter": prior["deter"], "stoch": self.sample(stats, deterministic), **stats}
        return post, prior

    def observe(self, embed, action, is_first, state=None):
        """Runs the posterior along (B, T) sequences; returns stacked post and prior.

        ``action[:, t]`` led to observation t (row 0's is zero), as stored in datasets.
        """
        b, t = embed.shape[:2]
        state = state or self.initial(b, embed.device)
        posts, priors = [], []
        for i in range(t):
            post, prior = self.obs_step(state, action[:, i], embed[:, i], is_first[:, i])
            posts.append(post)
            priors.append(prior)
            state = post
        stack = lambda seq: {k: torch.stack([s[k] for s in seq], 1) for k in seq[0]  # noqa: E731
                             if k != "heads"}
        prior_stacked = stack(priors)
        prior_stacked["heads"] = {k: torch.stack([p["heads"][k] for p in priors], 2)
                                  for k in priors[0]["heads"]}
        return stack(posts), prior_stacked

    @staticmethod
    def feat(state: dict) -> torch.Tensor:
        return torch.cat([state["stoch"], state["deter"]], -1)


class VectorEncoder(nn.Module):
    """Encoder of low-dimensional state vectors."""

    def __init__(self, in_dim: int, units: int, layers: int):
        super().__init__()
        self.net = mlp(in_dim, units, layers - 1, units)
        self.out_dim = units

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state.float())


class WorldModel(nn.Module):
    """Encoder, RSSM and heads, with DreamerV2's loss. Encodes images, or state vectors
    when ``cfg.obs == "state"`` (then ``state_dim`` is needed)."""

    def __init__(self, cfg: DreamerConfig, action_dim: int, state_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        if cfg.obs not in ("image", "state"):
            raise ValueError(f"obs must be 'image' or 'state', got {cfg.obs!r}.")
        self.obs_key = cfg.obs
        if cfg.obs == "image":
            self.encoder = ConvEncoder(cfg.cnn_depth)
        else:
            if not state_dim:
                raise ValueError("A state world model needs the state dimension.")
            self.encoder = VectorEncoder(state_dim, cfg.mlp_units, cfg.mlp_layers)
        self.rssm = RSSM(cfg, action_dim, self.encoder.out_dim)
        feat = self.rssm.feat_dim
        self.decoder = (ConvDecoder(feat, cfg.cnn_depth) if cfg.obs == "image"
                        else mlp(feat, cfg.mlp_units, cfg.mlp_layers, state_dim))
        self.reward = mlp(feat, cfg.mlp_units, cfg.mlp_layers, 1)
        self.cont = mlp(feat, cfg.mlp_units, cfg.mlp_layers, 1)

    def embed(self, batch: dict) -> torch.Tensor:
        return self.encoder(batch[self.obs_key])

    def kl_loss(self, post: dict, prior: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced KL, averaged over the ensemble's prior heads (each is trained)."""
        heads = prior["heads"]
        k = next(iter(heads.values())).shape[0]
        post_stats = {key: post[key] for key in heads}
        losses, values = [], []
        for i in range(k):
            loss, value = kl_balance_loss(self.rssm.kl, post_stats,
                                          {key: v[i] for key, v in heads.items()},
                                          self.cfg.kl_balance, self.cfg.free_nats)
            losses.append(loss)
            values.append(value)
        return torch.stack(losses).mean(), torch.stack(values).mean()

    def loss(self, batch: dict, embed: torch.Tensor | None = None, reward_scale: float = 1.0):
        """DreamerV2 world-model loss on a (B, T) batch of torch tensors.

        Returns (loss, posterior, prior, scalars). Each term is averaged over batch and
        time: image -log N(x; x_hat, 1) summed over pixels, reward_scale x reward
        -log N(r; r_hat, 1), continuation Bernoulli NLL, kl_scale x balanced KL.
        """
        embed = self.embed(batch) if embed is None else embed
        post, prior = self.rssm.observe(embed, batch["action"], batch["is_first"])
        feat = self.rssm.feat(post)
        if self.obs_key == "image":
            target = batch["image"].float() / 255.0 - 0.5
            image_nll = 0.5 * ((self.decoder(feat) - target) ** 2).sum((-3, -2, -1)).mean()
        else:
            image_nll = 0.5 * ((self.decoder(feat) - batch["state"]) ** 2).sum(-1).mean()
        reward_nll = 0.5 * ((self.reward(feat)[..., 0] - batch["reward"]) ** 2).mean()
        cont_nll = F.binary_cross_entropy_with_logits(self.cont(feat)[..., 0], batch["discount"])
        kl_loss, kl_value = self.kl_loss(post, prior)
        loss = image_nll + reward_scale * reward_nll + cont_nll + self.cfg.kl_scale * kl_loss
        scalars = {"image_nll": image_nll.item(), "reward_nll": reward_nll.item(),
                   "cont_nll": cont_nll.item(), "kl": kl_value.item(),
                   "model_loss": loss.item()}
        return loss, post, prior, scalars


class TanhNormal:
    """Normal squashed by tanh: reparameterised samples in (-1, 1)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.base = torch.distributions.Normal(mean, std)

    def rsample(self) -> torch.Tensor:
        return torch.tanh(self.base.rsample())

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.base.mean)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        action = action.clamp(-0.999999, 0.999999)
        pre = torch.atanh(action)
        return (self.base.log_prob(pre) - torch.log(1 - action ** 2 + 1e-6)).sum(-1)


class ActorCritic(nn.Module):
    """DreamerV2 behaviour learning in imagination."""

    def __init__(self, cfg: DreamerConfig, feat_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        self.actor = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 2 * action_dim)
        self.critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1)
        self.slow_critic = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, 1)
        self.slow_critic.load_state_dict(self.critic.state_dict())
        self.slow_critic.requires_grad_(False)
        self.updates = 0

    def policy(self, feat: torch.Tensor) -> TanhNormal:
        mean, std = self.actor(feat).chunk(2, -1)
        return TanhNormal(mean, 2 * torch.sigmoid(std / 2) + 0.1)

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        return self.critic(feat)[..., 0]

    def imagine(self, world_model: WorldModel, start: dict, horizon: int,
                head_sampler: Callable[[int], torch.Tensor] | None = None) -> dict:
        """Rolls the actor out in the model from flattened start states (no grad into
        the start). Returns feats (H+1, N, F), actions (H, N, A) and the prior states."""
        rssm = world_model.rssm
        state = {"deter": start["deter"].detach(), "stoch": start["stoch"].detach()}
        feats, actions, states = [rssm.feat(state)], [], [state]
        for _ in range(horizon):
            action = self.policy(feats[-1].detach()).rsample()
            head = head_sampler(state["deter"].shape[0]) if head_sampler else None
            state = rssm.img_step(state, action, head=head)
            feats.append(rssm.feat(state))
            actions.append(action)
            states.append(state)
        return {"feat": torch.stack(feats), "action": torch.stack(actions), "states": states}

    def losses(self, world_model: WorldModel, traj: dict, reward: torch.Tensor,
               critic_extra: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Actor and critic losses on an imagined trajectory.

        ``reward``: (H, N) rewards r_{t+1} of reaching each imagined state (already
        penalised or relabelled by the caller). ``critic_extra(feat, value)`` adds a
        term to the critic loss (CoWorld's min-max constraint).
        """
        cfg = self.cfg
        feat = traj["feat"]
        cont = torch.sigmoid(world_model.cont(feat[1:])[..., 0])
        discount = cfg.discount * cont
        slow_value = self.slow_critic(feat)[..., 0]
        target = lambda_return(reward, slow_value, discount, cfg.lam)  # (H, N)
        weight = torch.cumprod(torch.cat([torch.ones_like(discount[:1]), discount[:-1]]), 0
                               ).detach()
        # Actor: dynamics backpropagation and REINFORCE, plus entropy.
        policy = self.policy(feat[:-1].detach())
        actions = traj["action"]
        log_prob = policy.log_prob(actions.detach())
        entropy = -log_prob  # one-sample estimate (the squashed normal has no closed form)
        advantage = (target - slow_value[:-1]).detach()
        rho = cfg.reinforce_weight
        objective = rho * log_prob * advantage + (1 - rho) * target
        actor_loss = -(weight * (objective + cfg.actor_entropy * entropy)).mean()
        # Critic: regress the lambda-returns of the imagined states.
        value = self.value(feat[:-1].detach())
        critic_loss = (weight * 0.5 * (value - target.detach()) ** 2).mean()
        scalars = {"actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(),
                   "value": value.mean().item(), "target": target.mean().item(),
                   "entropy": entropy.mean().item(), "imag_reward": reward.mean().item()}
        if critic_extra is not None:
            extra, extra_scalars = critic_extra(feat[:-1].detach(), value, weight)
            critic_loss = critic_loss + extra
            scalars.update(extra_scalars)
        return actor_loss, critic_loss, scalars

    def update_slow(self) -> None:
        self.updates += 1
        if self.updates % self.cfg.slow_critic_every == 0:
            self.slow_critic.load_state_dict(self.critic.state_dict())


def make_optimizer(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, eps=1e-5)


def clip_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, clip: float) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return float(norm)


def autocast(cfg: DreamerConfig, device: torch.device):
    """bfloat16 mixed precision on CUDA when precision == 16; a no-op elsewhere."""
    enabled = device.type == "cuda" and cfg.precision == 16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def to_torch(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        t = torch.as_tensor(v, device=device)
        out[k] = t if v.dtype in (np.uint8, np.bool_) else t.float()
    return out


def pad_actions(action: torch.Tensor, dim: int) -> torch.Tensor:
    return F.pad(action, (0, dim - action.shape[-1])) if action.shape[-1] < dim else action


def flatten_states(states: dict) -> dict:
    """(B, T, ...) posterior states -> (B*T, ...) imagination starts."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()
            if k in ("deter", "stoch")}




class DreamerAgent(nn.Module):
    """World model + actor-critic + optimisers: one DreamerV2 agent.

    ``train_model`` and ``train_behaviour`` are the two halves of a DreamerV2 update;
    algorithms combine them (frozen models, penalised or relabelled rewards, extra
    critic terms, several agents).
    """

    def __init__(self, cfg: DreamerConfig, action_dim: int, device, seed: int,
                 state_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.action_dim = action_dim
        self.device = device
        self.wm = WorldModel(cfg, action_dim, state_dim).to(device)
        self.ac = ActorCritic(cfg, self.wm.rssm.feat_dim, action_dim).to(device)
        self.model_opt = make_optimizer(self.wm.parameters(), cfg.model_lr)
        self.actor_opt = make_optimizer(self.ac.actor.parameters(), cfg.actor_lr)
        self.critic_opt = make_optimizer(self.ac.critic.parameters(), cfg.critic_lr)
        self.rng = np.random.default_rng(seed)

    def batch(self, source) -> dict[str, torch.Tensor]:
        """A (batch, seq_len) batch from a SequenceSampler-like or a Replay."""
        cfg = self.cfg
        if hasattr(source, "sample_indices"):
            data = source.sample()
        else:
            data = source.sample(self.rng, cfg.batch_size, cfg.seq_len)
        keep = "image" if self.cfg.obs == "image" else "state"
        data = to_torch({k: v for k, v in data.items() if k not in ("image", "state") or k == keep},
                        self.device)
        data["action"] = pad_actions(data["action"], self.action_dim)
        return data

    def train_model(self, batch, extra_loss: Callable | None = None):
        """One world-model update; ``extra_loss(embed, post) -> (loss, scalars)`` is
        added (CoWorld's state alignment). Returns posterior states and scalars."""
        with autocast(self.cfg, self.device):
            embed = self.wm.embed(batch)
            loss, post, _, scalars = self.wm.loss(batch, embed=embed)
            if extra_loss is not None:
                extra, extra_scalars = extra_loss(embed, post)
                loss = loss + extra
                scalars.update(extra_scalars)
        scalars["model_grad_norm"] = clip_step(self.model_opt, loss, self.wm.parameters(),
                                               self.cfg.grad_clip)
        return post, scalars

    def imagined_reward(self, traj: dict) -> torch.Tensor:
        return self.wm.reward(traj["feat"][1:])[..., 0]

    def train_behaviour(self, post: dict, reward_fn: Callable | None = None,
                        critic_extra: Callable | None = None,
                        head_sampler: Callable | None = None,
                        actor_penalty: Callable | None = None,
                        critic_penalty: Callable | None = None) -> dict[str, float]:
        """One actor and one critic update in imagination from every posterior state.

        ``reward_fn(traj) -> (H, N)`` replaces the model's reward (penalties, relabels);
        ``actor_penalty()`` / ``critic_penalty()`` add parameter-space terms (EWC).
        """
        cfg = self.cfg
        self.wm.requires_grad_(False)
        try:
            with autocast(cfg, self.device):
                traj = self.ac.imagine(self.wm, flatten_states(post), cfg.horizon, head_sampler)
                reward = (reward_fn or self.imagined_reward)(traj)
                actor_loss, critic_loss, scalars = self.ac.losses(self.wm, traj, reward,
                                                                   critic_extra)
                if actor_penalty is not None:
                    actor_loss = actor_loss + actor_penalty()
                if critic_penalty is not None:
                    critic_loss = critic_loss + critic_penalty()
        finally:
            self.wm.requires_grad_(True)
        scalars["actor_grad_norm"] = clip_step(self.actor_opt, actor_loss,
                                               self.ac.actor.parameters(), cfg.grad_clip)
        scalars["critic_grad_norm"] = clip_step(self.critic_opt, critic_loss,
                                                self.ac.critic.parameters(), cfg.grad_clip)
        self.ac.update_slow()
        return scalars

    # Acting ------------------------------------------------------------------------

    @torch.no_grad()
    def observe_step(self, obs: dict, state):
        """Posterior state after ``obs``; ``state`` = (rssm state, previous action)."""
        if state is None or obs["is_first"]:
            rssm_state = self.wm.rssm.initial(1, self.device)
            prev_action = torch.zeros(1, self.action_dim, device=self.device)
        else:
            rssm_state, prev_action = state
        embed = self.wm.encoder(torch.as_tensor(obs[self.wm.obs_key][None], device=self.device))
        post, _ = self.wm.rssm.obs_step(rssm_state, prev_action, embed)
        return post

    @torch.no_grad()
    def act(self, obs: dict, state, deterministic: bool):
        post = self.observe_step(obs, state)
        dist = self.ac.policy(self.wm.rssm.feat(post))
        action = dist.mode() if deterministic else dist.rsample()
        post = {"deter": post["deter"], "stoch": post["stoch"]}
        return action[0].cpu().numpy(), (post, action)

    @torch.no_grad()
    def value_of(self, state) -> float:
        post, _ = state
        return float(self.ac.value(self.wm.rssm.feat(post))[0])

    def full_state(self) -> dict:
        return {"model": self.state_dict(), "model_opt": self.model_opt.state_dict(),
                "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "ac_updates": self.ac.updates,
                "rng": self.rng.bit_generator.state}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.ac.updates = int(state["ac_updates"])
        self.rng.bit_generator.state = state["rng"]
