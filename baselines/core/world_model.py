"""The DreamerV2 world model (SPEC sections 4, 7): a LayerNorm GRU recurrent core,
discrete or Gaussian latents with posterior and prior (optionally an ensemble of
prior heads), the state encoder, and heads for image, reward and discount."""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from coworld_bench.errors import ConfigError
from baselines.core.nets import ELU, mlp
from baselines.core.config import DreamerConfig
from baselines.core.conv import ConvDecoder, ConvEncoder
from baselines.core.losses import categorical_kl, gaussian_kl, kl_balance_loss

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


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


