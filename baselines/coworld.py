"""CoWorld: collaborative world models for offline visual RL (paper section 3, Alg. 1).

A source agent (world model + actor-critic) learns online in the source simulator; a
target agent learns from the offline target dataset. After the source is pretrained
for ``pretrain_env_steps`` environment steps (``pretrain_env_steps / train_every``
updates, SPEC section 7), training alternates rounds of ``target_updates`` target
steps and ``source_updates`` source steps (both counted in updates), with three
transfers. Each update is a loss function over named terms, optimised by
``baselines.core.optim.optimize``; the paper's equations are:

- Eq. (3), ``CoWorld.target_model_loss``: DreamerV2's world-model loss plus (A).
- Eq. (4), ``relabel_rewards``; Eq. (5) with Eq. (2), ``CoWorld.source_model_loss``.
- Eq. (6), ``CoWorld.target_behaviour_loss``: critic with (C) (``minmax_value_loss``).
- Eqs. (7), (8): DreamerV2's actor loss and lambda-return (``baselines.core``);
  the paper's rho on dynamics backpropagation is 1 - ``reinforce_weight`` here.

(A) state alignment, target step. The target world model's loss gains
    beta2 * KL( sg(g(e_S(o_T))) || g(e_T(o_T)) ), g = softmax over the encoder
    embedding, both encoders reading the same target images; only the target encoder
    gets gradient. As in the authors' code, the KL is summed over time and averaged
    over the batch (the paper's beta2 values were tuned under that scaling).
(B) reward alignment, source step. The source model runs on target observations and
    actions; its reward head there is trained on r~ = (1 - k) sg(r_S(h~, z~)) + k r_T.
    The source reward loss is eta * NLL(r_S on source data) + (1 - eta) * NLL(r~ on
    target states), eta going linearly from 1 to 0.1 over each source stage (the
    authors' code freezes eta by a bug; not copied). The relabelled term trains the
    whole source world model (paper: Eq. (5) is integrated into Eq. (2) "to train the
    entire world model"; SPEC section 7): only r_S inside r~ is a stopped gradient.
(C) min-max value constraint, target step. Critic loss
    sum_t 1/2 (v(z_t) - sg(V_t^lambda))^2 + alpha * max(v(z_t), sg(v_S(z_t))), v_S the
    source critic on the target's imagined states: its gradient pushes v down only where
    v > v_S. ``constraint=brute_force`` (the paper's "w/o Max") uses alpha * v instead.

Target world-model warm-up (SPEC 7b; the authors' ``co_training.py`` step 2, paper
appendix C step 1): between pretraining and co-training, ``warmup_rounds`` rounds of
``warmup_target_updates`` world-model-only target updates (DreamerV2's loss, no
transfer) followed by ``warmup_source_updates`` source updates with (B) relabelling.
The authors run 2 rounds of 1e4 target updates and 1e4 source environment steps (2,000
updates at ``train_every`` 5); those are the paper preset's values. Without it (A)
would pull a randomly initialised target encoder toward the source and multi-source
selection would compare the sources with that random encoder. With several sources
the warm-up's source updates go to each source in turn (no selection has been made).

Multi-source (appendix C): one source agent per candidate; at every target step the
source whose g(e_S(o_T)) is closest in KL to g(e_T(o_T)) is selected (a one-hot
weight) and provides the alignment target and the constraint; the source stage trains
(and relabels with) the source selected most often in the preceding target stage.
Selections are logged per step.

Frozen source encoders during a target stage: a source only learns in its own stage,
so its embedding of a target frame is the same at every target step of a stage.
``FrameEmbeddings`` keeps each frame's embedding the first time a batch draws it and
reads it back at later steps; any source update clears it. The batches, the random
draws and the losses are those of encoding every batch afresh; the embeddings may
differ in the last bits (the encoder runs on the frames new to the cache, not on the
whole batch: other batch sizes, other kernel blockings).

Latent snapshots (paper fig. 11): ``work/latents.npz`` holds the source and target
encoder embeddings of the same fixed target frames at the start of co-training
("before" alignment: the target encoder trained by the warm-up alone, without (A))
and after the last update ("after"), for the report's t-SNE/PCA figure.

Action spaces: every agent acts in the largest action dimension among the tasks;
padded entries are ignored by the smaller envs (Meta-World -> RoboDesk).

Observations: the target world model encodes ``obs`` (images, or the state vector) and
the sources encode ``source_obs``. (A) and (B) run a source's model on target
observations, so they need both of the same kind. Both images: as the paper. Both
states (``obs=state source_obs=state``): both encoders read the same target state
vectors, every task's states zero-padded to the longest among them (as actions are).
Kinds that differ (the paper's low-dimensional source with image targets,
``source_obs=state``, or a state target with image sources): the source encoder cannot
read the target's observations, so (A) and (B) are off and only (C) transfers; for the
paper's setting this is weaker than the paper, whose treatment of it is not specified.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from baselines.core.actor_critic import behaviour_metrics
from baselines.core.agent import DreamerAgent, detach_states, pad_states
from baselines.core.config import QUICK_MODEL, SMOKE_MODEL
from baselines.core.online import (
    DreamerV2Config, OnlineLearner, dataset_state_dim, env_state_dim, use_collect_worker,
)
from baselines.core.schedules import check_pretraining, pretraining_lines, updates_for_env_steps
from coworld_bench.algorithm import Algorithm, Choice, Range, RunContext
from coworld_bench.data import SequenceSampler
from coworld_bench.errors import ConfigError
from coworld_bench.registry import register
from coworld_bench.seeding import RandomStates
from coworld_bench.tasks import resolve_task

# The paper's settings by target suite (SPEC section 4): co-training hyperparameters
# and source pretraining in environment steps (SPEC section 7).
PAPER = {
    "metaworld": dict(beta2=1.0, k=0.3, alpha=2.0, target_updates=50_000,
                      pretrain_env_steps=160_000),
    "robodesk": dict(beta2=1.0, k=0.3, alpha=2.0, target_updates=50_000,
                     pretrain_env_steps=160_000),
    "dmc": dict(beta2=1.5, k=0.9, alpha=1.0, target_updates=20_000, pretrain_env_steps=600_000),
}
# Co-training updates after pretraining (target and source steps together): the paper's
# training-efficiency table gives CoWorld 460k iterations on Meta-World (160k
# pretraining env steps + 300k updates); DMC follows DV2 Finetune's 600k + 600k.
CO_TRAINING_UPDATES = {"metaworld": 300_000, "robodesk": 300_000, "dmc": 600_000}


# The three transfers, as pure functions (unit-tested by hand) ------------------------

def state_alignment_loss(source_embed: torch.Tensor, target_embed: torch.Tensor) -> torch.Tensor:
    """(A): KL( sg(softmax(e_S)) || softmax(e_T) ), summed over time, mean over batch.
    Embeddings are (B, T, E); only ``target_embed`` receives gradient."""
    p_source = F.softmax(source_embed.detach(), -1)
    log_p_source = F.log_softmax(source_embed.detach(), -1)
    log_p_target = F.log_softmax(target_embed, -1)
    kl = (p_source * (log_p_source - log_p_target)).sum(-1)  # (B, T)
    return kl.sum(1).mean()


def embedding_kl(source_embed: torch.Tensor, target_embed: torch.Tensor) -> torch.Tensor:
    """Per-batch KL used to select a source (multi-source), same form as (A)."""
    with torch.no_grad():
        return state_alignment_loss(source_embed, target_embed)


def closest_source(source_embeds: list[torch.Tensor], target_embed: torch.Tensor
                   ) -> tuple[int, list[float]]:
    """Multi-source selection: the index of the source embedding closest in KL to the
    target's (a one-hot weight), and every KL."""
    kls = [embedding_kl(e, target_embed).item() for e in source_embeds]
    return int(np.argmin(kls)), kls


def relabel_rewards(source_reward: torch.Tensor, target_reward: torch.Tensor, k: float
                    ) -> torch.Tensor:
    """(B): r~ = (1 - k) sg(r_S(h~, z~)) + k r_T."""
    return (1 - k) * source_reward.detach() + k * target_reward


def eta_schedule(step_in_stage: int, stage_length: int) -> float:
    """(B)'s eta: linear from 1 at the start of a source stage to 0.1 at its end."""
    if stage_length <= 1:
        return 0.1
    return 1.0 - 0.9 * min(step_in_stage, stage_length - 1) / (stage_length - 1)


def minmax_value_loss(value: torch.Tensor, source_value: torch.Tensor, alpha: float,
                      brute_force: bool = False) -> torch.Tensor:
    """(C), per state: alpha * max(v, sg(v_S)); ``brute_force``: alpha * v ("w/o Max")."""
    if brute_force:
        return alpha * value
    return alpha * torch.maximum(value, source_value.detach())


class FrameEmbeddings:
    """A frozen encoder's embeddings of an offline dataset's frames, by row: each frame
    is encoded the first time a batch holds it, then read back, until ``clear()`` (the
    encoder changed). The bookkeeping stays on the host (the batch's row numbers come
    from the sampler), so a lookup never waits for the device. Off (``enabled``
    False) when the table would exceed ``max_bytes``."""

    def __init__(self, dataset, embed_dim: int, max_bytes: int = 1 << 30):
        rows = np.asarray(dataset.lengths, np.int64) + 1  # an episode of T steps: T+1 rows
        self.offsets = np.concatenate([[0], np.cumsum(rows)[:-1]])
        self.rows = int(rows.sum())
        self.enabled = self.rows * embed_dim * 4 <= max_bytes
        self.table: torch.Tensor | None = None
        self.known = np.zeros(self.rows, bool)
        self.encoded = 0  # frames run through the encoder (for tests and benchmarks)

    def clear(self) -> None:
        self.known[:] = False

    def __call__(self, encoder, images: torch.Tensor, episode: np.ndarray,
                 start: np.ndarray) -> torch.Tensor:
        """The embeddings (B, T, E), float32, of ``images`` (B, T, H, W, C; or state
        vectors, (B, T, S)): the sequences of ``episode`` starting at row ``start``."""
        b, t = images.shape[:2]
        flat = (self.offsets[episode][:, None] + start[:, None] + np.arange(t)).reshape(-1)
        rows, first = np.unique(flat, return_index=True)
        new = ~self.known[rows]
        device = images.device
        if new.any():
            frames = images.reshape(b * t, *images.shape[2:])[_index(first[new], device)]
            embed = encoder(frames).float()  # lossless from bfloat16; callers want float32
            if self.table is None:
                self.table = embed.new_empty((self.rows, embed.shape[-1]))
            self.table[_index(rows[new], device)] = embed
            self.known[rows[new]] = True
            self.encoded += int(new.sum())
        return self.table[_index(flat, device)].reshape(b, t, -1)


def _index(array: np.ndarray, device) -> torch.Tensor:
    """Host row numbers as an index tensor on ``device`` (pinned, non-blocking)."""
    index = torch.as_tensor(np.ascontiguousarray(array, np.int64))
    if torch.device(device).type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index


# Configuration -----------------------------------------------------------------------

@dataclasses.dataclass
class CoWorldConfig(DreamerV2Config):
    """CoWorld. Settings left unset (none) take the paper's value for the target's
    suite (``CoWorld.paper``).

    Attributes:
      pretrain_env_steps: source environment steps of online pretraining before
        co-training, per source (paper: 160k Meta-World/RoboDesk, 600k DMC); that is
        ``pretrain_updates`` = pretrain_env_steps / train_every updates.
      target_updates: target steps per round.
      source_updates: source steps per round.
      rounds: co-training rounds (unset: enough to cover the paper's co-training
        updates, 300k on Meta-World/RoboDesk, 600k on DMC).
      warmup_rounds: rounds of the target world-model warm-up before co-training
        (authors' code: 2; 0 = none).
      warmup_target_updates: world-model-only target updates per warm-up round
        (authors' code: 1e4).
      warmup_source_updates: source updates with (B) per warm-up round (the authors'
        1e4 environment steps, i.e. 2,000 updates at train_every 5).
      train_steps: updates in total, pretraining's and the warm-up's included (unset:
        pretraining + warm-up + the co-training rounds).
      beta2: domain KL scale of (A).
      k: target-informed reward factor of (B).
      alpha: value-constraint scale of (C).
      no_state_align, no_reward_align, no_value_constraint: ablations (paper fig. 5a).
      constraint: "max" (CoWorld) or "brute_force" (the paper's "w/o Max").
      sources: multi-source: comma-separated source tasks (coworld-multisource).
      source_sparse_reward: the source gives 1 on success, else 0 (paper's setting).
      obs: what the target world model encodes: "image", or "state" (the target's
        state vector). (A) and (B) need the sources to encode the same kind
        (source_obs); with kinds that differ only (C) transfers (see module doc).
      source_obs: what the source world models encode: "image", or "state" for a
        low-dimensional source (see module doc).
    """

    train_steps: int | None = None
    pretrain_env_steps: int | None = None
    target_updates: int | None = None
    source_updates: int = 20_000
    rounds: int | None = None
    warmup_rounds: int = 2
    warmup_target_updates: int = 10_000
    warmup_source_updates: int = 2_000
    beta2: float | None = None
    k: float | None = None
    alpha: float | None = None
    no_state_align: bool = False
    no_reward_align: bool = False
    no_value_constraint: bool = False
    constraint: str = "max"
    sources: str = ""
    source_sparse_reward: bool = False
    source_obs: str = "image"
    dataset_quality: str = "medium-replay"
    dataset_behaviour: str = "dreamerv2"

    checks: ClassVar[dict] = {
        "pretrain_env_steps": Range(1), "target_updates": Range(1), "source_updates": Range(1),
        "rounds": Range(1), "warmup_rounds": Range(0), "warmup_target_updates": Range(1),
        "warmup_source_updates": Range(0), "beta2": Range(0), "k": Range(0, 1), "alpha": Range(0),
        "constraint": Choice(("max", "brute_force")), "source_obs": Choice(("image", "state")),
    }

    @property
    def pretrain_updates(self) -> int:
        return updates_for_env_steps(self.pretrain_env_steps, self.train_every)

    @property
    def warmup_updates(self) -> int:
        """Updates of the target world-model warm-up, target and source together."""
        return self.warmup_rounds * (self.warmup_target_updates + self.warmup_source_updates)

    def source_names(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]


def resolve_schedule(config: CoWorldConfig, target) -> CoWorldConfig:
    """Rounds and total updates from the paper's co-training length, unless set."""
    per_round = config.target_updates + config.source_updates
    co_training = CO_TRAINING_UPDATES[target.suite]
    if config.rounds is None:
        config.rounds = math.ceil(co_training / per_round)
    else:
        co_training = config.rounds * per_round
    n_sources = max(1, len(config.source_names()))
    if config.train_steps is None:
        config.train_steps = n_sources * config.pretrain_updates + config.warmup_updates + co_training
    if config.source_obs != config.obs and n_sources > 1:
        raise ConfigError("Multi-source selection compares the sources' and the target's "
                          "encoders on target observations; it needs source_obs equal to obs "
                          f"(here source_obs={config.source_obs}, obs={config.obs}).")
    return check_pretraining(config, n_sources)


# The warm-up scaled with the run: the authors' 2 x (1e4 + 2,000) is 8% of the paper's
# 300k co-training updates; the quick preset's 2 x (40 + 8) is 8% of its 600.
SMOKE = dict(SMOKE_MODEL, prefill=60, train_every=5, pretrain_env_steps=30, target_updates=4,
             source_updates=3, rounds=2, warmup_rounds=1, warmup_target_updates=2,
             warmup_source_updates=1, train_steps=23)
QUICK = dict(QUICK_MODEL, batch_size=16, seq_len=16, prefill=1_500, train_every=5,
             pretrain_env_steps=1_500, target_updates=200, source_updates=100, rounds=2,
             warmup_rounds=2, warmup_target_updates=40, warmup_source_updates=8,
             train_steps=996, eval_every=0)


class SourceAgent:
    """One source: its DreamerV2 agent and online learner."""

    def __init__(self, task, config, ctx: RunContext, action_dim: int, index: int,
                 state_dim: int | None = None):
        self.task = task
        options = {"action_dim": action_dim}
        if config.source_sparse_reward:
            options["sparse_reward"] = True
        make_env = functools.partial(ctx.make_env, task.id, **options)
        env = make_env()
        source_config = dataclasses.replace(config, obs=config.source_obs)
        self.agent = DreamerAgent(source_config, action_dim, ctx.device,
                                      ctx.seed + 1000 * (index + 1), state_dim=state_dim,
                                      compile_backend=ctx.compile_backend)
        worker = use_collect_worker(config, ctx.device)
        if worker:  # the worker makes its own
            env.close()
        self.learner = OnlineLearner(self.agent, make_env if worker else lambda: env,
                                     ctx.artifacts.path(f"source{index}_replay"),
                                     ctx.seed + 1000 * (index + 1), config, worker=worker)


@register("coworld")
class CoWorld(Algorithm):
    Config = CoWorldConfig
    description = ("CoWorld: source and target world models with state alignment, reward "
                   "relabelling and a min-max value constraint.")
    needs_source = True
    has_value = True
    presets = {"smoke": SMOKE, "quick": QUICK}
    paper_name = "CoWorld"
    family = "transfer"
    paper = PAPER

    @classmethod
    def schedule_lines(cls, config):
        sources = max(1, len(config.source_names()))
        lines = pretraining_lines(config, sources)
        if config.warmup_updates:
            lines.append(f"The next {config.warmup_updates} updates warm the target world model "
                         f"up before co-training ({config.warmup_rounds} rounds of "
                         f"{config.warmup_target_updates} target world-model updates and "
                         f"{config.warmup_source_updates} source updates).")
        return lines

    def timed_steps(self):
        """The target step and a source update mid-stage (there the relabelled term has
        weight 1 - eta > 0; at a stage's first step eta = 1 and its backward pass is
        skipped); the first source's replay is filled first, as pretraining would."""
        learner = self.sources[0].learner
        while not learner.ready():
            learner.collect(self.config.train_every)
        middle = self.config.source_updates // 2
        return {"coworld target step": self.target_step,
                "coworld source step": lambda: self.source_update(middle)}

    def online_step(self):
        self.timed_steps()  # the replay the update samples
        middle = self.config.source_updates // 2
        mode = "worker" if self.sources[0].learner.worker is not None else "in_process"
        return mode, lambda: self.source_step(middle)

    def sequence_shape(self):
        return self.config.batch_size, self.config.seq_len

    @classmethod
    def resolve(cls, config, source, target):
        return resolve_schedule(config, target)

    def source_tasks(self, ctx: RunContext) -> list:
        return [ctx.source]

    def __init__(self, config: CoWorldConfig, ctx: RunContext):
        super().__init__(config, ctx)
        tasks = self.source_tasks(ctx)
        self.action_dim = max([ctx.action_dim, *[t.action_dim for t in tasks]])
        state_dim = self.run_state_dim(ctx, tasks)
        self.sources = [SourceAgent(t, config, ctx, self.action_dim, i, state_dim)
                        for i, t in enumerate(tasks)]
        self.target = DreamerAgent(config, self.action_dim, ctx.device, ctx.seed,
                                       state_dim=state_dim, compile_backend=ctx.compile_backend)
        self.sampler = SequenceSampler(ctx.dataset, config.batch_size, config.seq_len,
                                       seed=ctx.seed)
        self.frame_embeddings = [
            FrameEmbeddings(ctx.dataset, s.agent.wm.encoder.out_dim)
            if self.aligns_observations else None for s in self.sources]
        self.selected = 0
        self.selection_counts = np.zeros(len(self.sources), np.int64)
        self.target_steps = 0

    def run_state_dim(self, ctx: RunContext, tasks) -> int | None:
        """The state length of every world model here that encodes states: the longest
        state among the tasks they read, shorter ones zero-padded (None: no world model
        encodes states)."""
        cfg = self.config
        dims = [dataset_state_dim(ctx)] if cfg.obs == "state" else []
        if cfg.source_obs == "state":
            dims += [env_state_dim(functools.partial(ctx.make_env, t.id,
                                                     action_dim=self.action_dim))
                     for t in tasks]
        return max(dims, default=None)

    @property
    def aligns_observations(self) -> bool:
        """Whether the source encoders can read target observations, as (A) and (B) do:
        the source and target world models encode the same kind (module docstring)."""
        return self.config.source_obs == self.config.obs

    # Schedule ------------------------------------------------------------------------

    @property
    def co_training_start(self) -> int:
        """The first co-training update: after pretraining and the warm-up."""
        return self.config.pretrain_updates * len(self.sources) + self.config.warmup_updates

    def phase(self, step: int) -> tuple[str, int]:
        """("pretrain", source index) | ("warmup_target", i) | ("warmup_source", i in
        stage) | ("target", i) | ("source", i in stage)."""
        cfg = self.config
        pretrain_total = cfg.pretrain_updates * len(self.sources)
        if step < pretrain_total:
            return "pretrain", step // cfg.pretrain_updates
        if step < self.co_training_start:
            offset = (step - pretrain_total) % (cfg.warmup_target_updates
                                                + cfg.warmup_source_updates)
            if offset < cfg.warmup_target_updates:
                return "warmup_target", offset
            return "warmup_source", offset - cfg.warmup_target_updates
        offset = (step - self.co_training_start) % (cfg.target_updates + cfg.source_updates)
        if offset < cfg.target_updates:
            return "target", offset
        return "source", offset - cfg.target_updates

    def train_step(self, step):
        scalars = self._train_step(step)
        if step + 1 == self.config.train_steps:
            self.snapshot_latents("after")
        return scalars

    def _train_step(self, step):
        phase, index = self.phase(step)
        if phase != "target":  # a source learns: its embeddings of target frames change
            self.clear_frame_embeddings()
        if phase == "pretrain":
            return {f"source{index}/{k}": v for k, v in self.sources[index].learner.step().items()}
        if phase == "warmup_target":
            return self.warmup_target_step()
        if phase == "warmup_source":
            self.selected = index % len(self.sources)
            stage = self.config.warmup_source_updates
            return self.source_step(index, stage)
        if phase == "target":
            if index == 0:
                self.selection_counts[:] = 0
                if step == self.co_training_start:
                    self.snapshot_latents("before")
            return self.target_step()
        if index == 0 and len(self.sources) > 1:  # the stage trains the most selected source
            self.selected = int(self.selection_counts.argmax())
        return self.source_step(index)

    # Latent snapshots (fig. 11) --------------------------------------------------------

    LATENT_FRAMES = 256

    def latent_frames(self) -> np.ndarray:
        """Fixed target frames (the same in every snapshot and run of this dataset):
        evenly spaced over the dataset's steps; with ``obs=state``, the state vectors
        there, padded as the encoders read them."""
        dataset = self.ctx.dataset
        offsets = np.concatenate([[0], np.cumsum(dataset.lengths)])
        total = int(offsets[-1])
        picks = np.unique(np.linspace(0, total - 1, min(self.LATENT_FRAMES, total)).astype(int))
        frames = []
        for flat in picks:
            episode = int(np.searchsorted(offsets, flat, side="right") - 1)
            start = int(flat - offsets[episode])
            frames.append(dataset.read(episode, self.target.wm.obs_key, start, start + 1)[0])
        if self.target.wm.obs_key == "state":
            return pad_states(np.stack(frames), self.target.state_dim)
        return np.stack(frames)

    def snapshot_latents(self, tag: str) -> None:
        """Writes both encoders' embeddings of the fixed frames under ``tag`` into
        ``work/latents.npz`` (other tags kept). Consumes no random state."""
        if not self.aligns_observations or self.ctx.artifacts is None:
            return
        images = torch.as_tensor(self.latent_frames(), device=self.ctx.device)
        source = self.sources[self.selected]
        with torch.no_grad():
            self.ctx.artifacts.update_npz(
                "latents.npz",
                **{f"{tag}_source": source.agent.wm.encoder(images).float().cpu().numpy(),
                   f"{tag}_target": self.target.wm.encoder(images).float().cpu().numpy(),
                   f"{tag}_source_task": np.array(source.task.id)})

    # Target step: (A) and (C) --------------------------------------------------------

    def source_embeddings(self, images, rows=None) -> list[torch.Tensor]:
        """Each source encoder's embedding of ``images`` (no gradient); with ``rows``
        (the batch's (episodes, start rows) in the target dataset), through the
        frozen sources' ``FrameEmbeddings``."""
        with torch.no_grad():
            if rows is None:
                return [s.agent.wm.encoder(images) for s in self.sources]
            return [cache(s.agent.wm.encoder, images, *rows) if cache.enabled
                    else s.agent.wm.encoder(images)
                    for s, cache in zip(self.sources, self.frame_embeddings)]

    def clear_frame_embeddings(self) -> None:
        for cache in self.frame_embeddings:
            if cache is not None:
                cache.clear()

    def select_source(self, target_embed, images, rows=None) -> tuple[int, torch.Tensor, dict]:
        """Picks the source for this target step: its index and its encoder's embedding
        of ``images`` (``source_embeddings``); with several sources, logs the choice
        (one-hot) and appends it to ``work/source_selection.csv`` (one line per target
        step)."""
        embeds = self.source_embeddings(images, rows)
        if len(self.sources) == 1:
            return 0, embeds[0], {}
        chosen, kls = closest_source([e.float() for e in embeds], target_embed.float())
        self.selection_counts[chosen] += 1
        self.target_steps += 1
        scalars = {f"select_kl/{s.task.code}": kl for s, kl in zip(self.sources, kls)}
        scalars.update({f"selected/{s.task.code}": float(i == chosen)
                        for i, s in enumerate(self.sources)})
        self.ctx.artifacts.append_row(
            "source_selection.csv",
            ["target_step", "selected", *[f"kl_{s.task.id}" for s in self.sources]],
            [self.target_steps, self.sources[chosen].task.id, *[f"{kl:.6g}" for kl in kls]])
        return chosen, embeds[chosen], scalars

    def target_model_loss(self, batch, rows=None):
        """Eq. (3): the target world model's DreamerV2 loss plus (A), the domain
        alignment beta2 * KL( sg(g(e_S(o_T))) || g(e_T(o_T)) ) (``model/state_align``),
        with the source chosen for this step (multi-source: the closest). ``rows``:
        the batch's (episodes, start rows) in the target dataset, if known."""
        cfg = self.config
        losses, scales, aux = self.target.model_loss(batch)
        chosen, metrics = 0, {}
        if self.aligns_observations:  # else no source encoder reads o_T: (A) is off
            chosen, source_embed, metrics = self.select_source(
                aux["embed"], batch[self.target.wm.obs_key], rows)
            kl = state_alignment_loss(source_embed.float(), aux["embed"].float())
            metrics["alignment_kl"] = kl.detach()
            if not cfg.no_state_align:
                losses["model/state_align"], scales["model/state_align"] = kl, cfg.beta2
        return losses, scales, {**aux, "chosen": chosen, "metrics": metrics}

    def target_behaviour_loss(self, post, source_critic):
        """Eqs. (6)-(8): DreamerV2's actor-critic loss in the target model, the critic
        with (C), the min-max constraint alpha * max(v, sg(v_S)) on the imagined states
        (``critic/minmax``; alpha * v for "w/o Max"), v_S the source critic."""
        cfg = self.config
        losses, scales, aux = self.target.behaviour_loss(post)
        with torch.no_grad():
            source_value = source_critic(aux["traj"]["feat"][:-1])[..., 0].float()
        value = aux["value"]
        aux["metrics"] = {"source_value": source_value.mean(),
                          "minmax_active": (value.detach() > source_value).float().mean()}
        if not cfg.no_value_constraint:
            term = minmax_value_loss(value, source_value, cfg.alpha,
                                     brute_force=cfg.constraint == "brute_force")
            losses["critic/minmax"], scales["critic/minmax"] = (aux["weight"] * term).mean(), 1.0
        return losses, scales, aux

    def warmup_target_step(self) -> dict:
        """A world-model-only target update (DreamerV2's loss; no transfer, no
        behaviour): the warm-up before co-training. Its metrics are ``warmup/...``."""
        _, metrics = self.target.train_model(self.target.batch(self.sampler))
        return {f"warmup/{k}": v for k, v in metrics.items()}

    def target_step(self) -> dict:
        target = self.target
        rows = self.sampler.sample_indices()
        batch = target.batch(self.sampler, rows)
        metrics, aux = target.optimize(self.target_model_loss, batch, rows)
        scalars = {**metrics, **aux["metrics"], "model/kl_value": aux["kl"]}
        source = self.sources[aux["chosen"]].agent
        behaviour, b_aux = target.optimize(self.target_behaviour_loss,
                                           detach_states(aux["post"]), source.ac.critic)
        target.ac.update_slow()
        scalars.update({**behaviour, **b_aux["metrics"], **behaviour_metrics(b_aux)})
        return {f"target/{k}": v for k, v in scalars.items()}

    # Source step: (B) and online collection ------------------------------------------

    def source_model_loss(self, source: SourceAgent, source_batch, target_batch, eta: float):
        """Eq. (2) with Eq. (5): the source world model's DreamerV2 loss, its reward term
        scaled by eta, plus (1 - eta) x the NLL of the relabelled rewards r~ (Eq. 4) of
        the target batch seen through the source model (``model/relabel``). The
        relabelled term trains the whole source model (SPEC section 7): its gradient
        reaches the encoder and the RSSM through the target features."""
        cfg = self.config
        agent = source.agent
        if target_batch is None:
            losses, scales, aux = agent.model_loss(source_batch)
            aux["metrics"] = {}
            return losses, scales, aux
        # One pass of the source encoder and RSSM over both batches, stacked along the
        # batch axis, then split: sequences are independent, so this is the computation
        # of two passes (only which random draw meets which sequence differs) in half the
        # sequential RSSM steps and with larger matrix products.
        wm, n = agent.wm, source_batch["action"].shape[0]
        keys = (wm.obs_key, "action", "is_first")
        both = {k: torch.cat([source_batch[k], target_batch[k]]) for k in keys}
        embed = wm.embed(both)
        post_both, prior_both = wm.rssm.observe(embed, both["action"], both["is_first"])
        head = lambda d: {k: v[:n] for k, v in d.items()}  # noqa: E731
        tail = lambda d: {k: v[n:] for k, v in d.items()}  # noqa: E731
        losses, post, model_aux = wm.terms(source_batch, embed[:n], head(post_both),
                                           head(prior_both))
        scales = agent.model_scales()
        predicted = wm.reward_of(wm.rssm.feat(tail(post_both)))
        relabelled = relabel_rewards(predicted, target_batch["reward"], cfg.k)
        losses["model/relabel"] = 0.5 * ((predicted - relabelled) ** 2).mean()
        scales["model/reward"], scales["model/relabel"] = eta, 1 - eta
        metrics = {"eta": torch.tensor(eta), "relabelled_reward": relabelled.mean(),
                   "true_target_reward": target_batch["reward"].mean()}
        return losses, scales, {"post": post, **model_aux, "metrics": metrics}

    def source_step(self, index_in_stage: int, stage_length: int | None = None) -> dict:
        """One source update and ``train_every`` steps of the source simulator: after
        the update, or beside it in the collection worker (``collect_worker``)."""
        with self.sources[self.selected].learner.collecting(self.config.train_every,
                                                               serial_first=False):
            return self.source_update(index_in_stage, stage_length)

    def source_update(self, index_in_stage: int, stage_length: int | None = None) -> dict:
        """The source's world-model update with (B), then its actor-critic update;
        eta goes from 1 to 0.1 over the stage (``stage_length``: default, a
        co-training source stage)."""
        cfg = self.config
        source = self.sources[self.selected]
        agent = source.agent
        relabel = not cfg.no_reward_align and self.aligns_observations
        source_batch = agent.batch(source.learner.replay)
        target_batch = agent.batch(self.sampler) if relabel else None
        eta = eta_schedule(index_in_stage, stage_length or cfg.source_updates)
        metrics, aux = agent.optimize(self.source_model_loss, source, source_batch,
                                      target_batch, eta)
        scalars = {**metrics, **aux["metrics"], "model/kl_value": aux["kl"]}
        scalars.update(agent.train_behaviour(detach_states(aux["post"])))
        return {f"source/{k}": v for k, v in scalars.items()}

    # Acting and state ----------------------------------------------------------------

    def policy(self, obs, state, deterministic=True):
        action, state = self.target.act(obs, state, deterministic)
        return action[: self.ctx.action_dim], state

    def value(self, obs, state):
        return self.target.value_of(state)

    def predicted_reward(self, obs, state):
        return self.target.reward_of_state(state)

    def state_dict(self):
        return {"target": self.target.full_state(),
                "sources": [{"agent": s.agent.full_state(), "learner": s.learner.state()}
                            for s in self.sources],
                "rngs": RandomStates(sampler=self.sampler.rng).state_dict(),
                "selected": self.selected, "target_steps": self.target_steps,
                "selection_counts": torch.as_tensor(self.selection_counts)}

    def load_state_dict(self, state):
        self.target.load_full_state(state["target"])
        for source, saved in zip(self.sources, state["sources"]):
            source.agent.load_full_state(saved["agent"])
            source.learner.load(saved["learner"])
        RandomStates(sampler=self.sampler.rng).load_state_dict(state["rngs"])
        self.selected = int(state["selected"])
        self.selection_counts = state["selection_counts"].numpy().copy()
        self.target_steps = int(state["target_steps"])
        # Selections made after the checkpoint are redone.
        self.ctx.artifacts.truncate_rows("source_selection.csv", self.target_steps)
        self.clear_frame_embeddings()

    def close(self):
        for source in self.sources:
            source.learner.close()


@register("coworld-multisource")
class CoWorldMultiSource(CoWorld):
    """CoWorld with several sources (``--set sources=BP,HP,...``; default: every
    Meta-World task but the target); run with ``--target T``."""

    description = "CoWorld with several sources, the closest selected by latent KL per step."
    needs_source = False
    paper_name = "CoWorld (multi-source)"
    learns_from = "several online sources (--set sources=BP,HP,...) + offline target"
    # train_steps unset: computed from the schedule (each source is pretrained in turn).
    presets = {"smoke": dict(SMOKE, sources="BP,WC", train_steps=None),
               "quick": dict(QUICK, sources="BP,WC,HP", train_steps=None)}

    @classmethod
    def resolve(cls, config, source, target):
        if not config.sources:
            config.sources = ",".join(t.code for t in _metaworld_tasks() if t.id != target.id)
        names = config.source_names()
        if len(names) < 2:
            raise ConfigError("coworld-multisource needs at least two sources "
                              "(--set sources=BP,HP).")
        for name in names:
            if resolve_task(name).id == target.id:
                raise ConfigError(f"Source {name} is the target itself; choose other sources "
                                  "with --set sources=...")
        return resolve_schedule(config, target)

    def source_tasks(self, ctx):
        return [resolve_task(s) for s in self.config.source_names()]


def _metaworld_tasks():
    from coworld_bench.tasks import TASKS

    return [t for t in TASKS if t.suite == "metaworld"]


def _ablation(name: str, paper_name: str, description: str, **settings):
    """A registered variant with an ablation switched on (for sweeps)."""

    class Variant(CoWorld):
        pass

    Variant.__name__ = Variant.__qualname__ = "CoWorld_" + name.replace("-", "_")
    Variant.description = description
    Variant.paper_name = paper_name
    Variant.family = "ablation"
    Variant.presets = {p: dict(v, **settings) for p, v in CoWorld.presets.items()}
    Variant.presets["paper"] = dict(settings)
    return register(name)(Variant)


CoWorldNoStateAlign = _ablation("coworld-no-state-align", "CoWorld w/o state alignment",
                                "CoWorld without (A) state alignment.",
                                no_state_align=True)
CoWorldNoRewardAlign = _ablation("coworld-no-reward-align", "CoWorld w/o reward alignment",
                                 "CoWorld without (B) reward relabelling.", no_reward_align=True)
CoWorldNoValueConstraint = _ablation("coworld-no-value-constraint",
                                     "CoWorld w/o value constraint",
                                     "CoWorld without (C) the min-max value constraint.",
                                     no_value_constraint=True)
CoWorldBruteForce = _ablation("coworld-brute-force", "CoWorld w/o Max",
                              "CoWorld with alpha * v in place of the min-max term (w/o Max).",
                              constraint="brute_force")
