"""LOMPO and LOMPO Finetune: the penalty, TD target, soft update and batch layout against
hand-computed values; rollouts and buffers by construction; a few real updates on a
real dataset (float32 and bfloat16 autocast), resumable from a weights-only state."""

import io
import math

import pytest
import torch
from torch import nn

from baselines.core.losses import gaussian_kl
from baselines.lompo import (
    LOMPO, TRANSITION_KEYS, LatentBuffer, LOMPOAgent, LOMPOFinetune,
    log_likelihood_uncertainty, mixed_batch, penalised_reward, sequence_transitions,
    td_target,
)
from baselines.core.nets import soft_update
from tests.baselines.test_dreamer_numerics import BF16, _finite, build

LOG_2PI = math.log(2 * math.pi)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine torch's threads make the RSSM's
    tiny per-step ops (a (2, 96) LayerNorm) ~400x slower (measured: 13 ms vs 0.03 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _agent(**overrides) -> LOMPOAgent:
    cfg = LOMPO.make_config("smoke", overrides)
    return LOMPOAgent(cfg, action_dim=3, device=torch.device("cpu"), seed=0)


def _batch(b=2, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (b, t, 64, 64, 3), generator=g, dtype=torch.uint8),
            "action": torch.rand(b, t, 3, generator=g) * 2 - 1,
            "reward": torch.rand(b, t, generator=g),
            "discount": torch.ones(b, t),
            "is_first": torch.zeros(b, t, dtype=torch.bool)}


def _transitions(n, reward, feat=2, action=3):
    return {"obs": torch.full((n, feat), reward), "action": torch.zeros(n, action),
            "next_obs": torch.full((n, feat), reward), "reward": torch.full((n,), reward),
            "discount": torch.ones(n)}


# The penalty --------------------------------------------------------------------------

def test_uncertainty_is_the_std_over_heads_of_the_sample_log_likelihood():
    # Two heads, two latent dimensions, sample z' = (0, 0):
    #   head 1 N((0, 0), diag(1, 1)):  log p = -log(2 pi)
    #   head 2 N((2, 0), diag(1, e^2)): log p = -log(2 pi) - 2 - 1   (-(2^2)/2, -log e)
    # population std of {a, a - 3} = 1.5. The second batch entry has identical heads: 0.
    means = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]])  # (K, N, S)
    stds = torch.tensor([[[1.0, 1.0], [0.5, 0.5]], [[1.0, math.e], [0.5, 0.5]]])
    sample = torch.tensor([[0.0, 0.0], [0.3, -0.2]])
    u = log_likelihood_uncertainty(means, stds, sample)
    assert torch.allclose(u, torch.tensor([1.5, 0.0]), atol=1e-6)
    # r_hat - 5 u: 2 - 7.5 = -5.5 and 2 - 0 = 2.
    reward = penalised_reward(torch.tensor([2.0, 2.0]), u, 5.0)
    assert torch.allclose(reward, torch.tensor([-5.5, 2.0]), atol=1e-6)


def test_uncertainty_divides_by_k_not_k_minus_one():
    # Three heads: log-likelihoods {c, c, c - 3} -> deviations (1, 1, -2), variance 6/3 = 2
    # (tf.math.reduce_std); the unbiased estimate would give sqrt(3).
    means = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[2.0, 0.0]]])
    stds = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]], [[1.0, math.e]]])
    u = log_likelihood_uncertainty(means, stds, torch.zeros(1, 2))
    assert u.item() == pytest.approx(math.sqrt(2), abs=1e-6)
    # The log-likelihood itself: -log(2 pi) for head 1.
    assert torch.distributions.Normal(means[0], stds[0]).log_prob(torch.zeros(1, 2)).sum() \
        .item() == pytest.approx(-LOG_2PI, abs=1e-6)


# The agent's update ---------------------------------------------------------------------

def test_td_target_by_hand():
    # y = r + gamma (1 - done) min(Q'_1, Q'_2), gamma 0.9:
    #   1 + 0.9 * min(2, 4) = 2.8;   0.5 + 0 (done) = 0.5;   -1 + 0.9 * min(-3, 1) = -3.7
    y = td_target(torch.tensor([1.0, 0.5, -1.0]), torch.tensor([1.0, 0.0, 1.0]),
                  torch.tensor([2.0, 3.0, -3.0]), torch.tensor([4.0, 1.0, 1.0]), 0.9)
    assert torch.allclose(y, torch.tensor([2.8, 0.5, -3.7]))


def test_soft_update_by_hand():
    source, target = nn.Linear(1, 1), nn.Linear(1, 1)
    nn.init.constant_(source.weight, 1.0), nn.init.constant_(source.bias, -2.0)
    nn.init.constant_(target.weight, 0.0), nn.init.constant_(target.bias, 0.0)
    soft_update(source, target, 0.1)  # 0.1 * 1 + 0.9 * 0; 0.1 * -2 + 0.9 * 0
    assert target.weight.item() == pytest.approx(0.1) and target.bias.item() == pytest.approx(-0.2)
    soft_update(source, target, 0.1)  # 0.1 + 0.9 * 0.1 = 0.19; -0.2 - 0.18 = -0.38
    assert target.weight.item() == pytest.approx(0.19)
    assert target.bias.item() == pytest.approx(-0.38)
    assert source.weight.item() == 1.0  # the source is untouched


def _constant(net: nn.Sequential, value: float) -> None:
    """The MLP outputs ``value`` whatever its input."""
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.fill_(value)


def test_critic_and_actor_losses_by_hand():
    agent = _agent()
    _constant(agent.q1, 1.0), _constant(agent.q2, 2.0)
    _constant(agent.target_q1, 3.0), _constant(agent.target_q2, 0.5)
    f = agent.feat_dim
    batch = {"obs": torch.randn(2, f), "action": torch.zeros(2, 3), "next_obs": torch.randn(2, f),
             "reward": torch.tensor([1.0, 0.0]), "discount": torch.tensor([1.0, 0.0])}
    losses, scales, aux = agent.agent_loss(batch)
    # y = (1 + 0.99 * min(3, 0.5), 0) = (1.495, 0)
    assert aux["target"].item() == pytest.approx((1.495 + 0) / 2)
    # critic 1: mean((1 - 1.495)^2, (1 - 0)^2) = (0.245025 + 1) / 2
    assert losses["critic/q1"].item() == pytest.approx((0.245025 + 1.0) / 2)
    # critic 2: mean((2 - 1.495)^2, (2 - 0)^2) = (0.255025 + 4) / 2
    assert losses["critic/q2"].item() == pytest.approx((0.255025 + 4.0) / 2)
    assert losses["actor/q"].item() == pytest.approx(-1.0)  # -min(1, 2)
    assert scales == {"critic/q1": 1.0, "critic/q2": 1.0, "actor/q": 1.0}


def test_each_loss_trains_only_its_own_networks():
    agent = _agent()
    f = agent.feat_dim
    batch = {"obs": torch.randn(4, f), "action": torch.rand(4, 3) * 2 - 1,
             "next_obs": torch.randn(4, f), "reward": torch.rand(4), "discount": torch.ones(4)}
    losses, _, _ = agent.agent_loss(batch)
    critic = [*agent.q1.parameters(), *agent.q2.parameters()]
    actor = list(agent.actor.parameters())
    critic_grads = torch.autograd.grad(losses["critic/q1"] + losses["critic/q2"], critic + actor,
                                       allow_unused=True)
    assert all(g is None for g in critic_grads[len(critic):])  # the actor is not in the TD loss
    assert any(g is not None and g.abs().sum() > 0 for g in critic_grads[:len(critic)])
    actor_grads = torch.autograd.grad(losses["actor/q"], critic + actor, allow_unused=True)
    assert all(g is None for g in actor_grads[:len(critic)])  # the critics are frozen there
    assert any(g is not None and g.abs().sum() > 0 for g in actor_grads[len(critic):])
    assert all(not p.requires_grad for p in agent.target_q1.parameters())


def test_kl_term_has_the_gradient_of_the_plain_kl():
    """The reference minimises KL(post || prior) (scale 1, no free nats); the shared
    balanced KL at balance 0.5, free nats 0 and scale 2 has the same value x 2 and the
    same gradient."""
    agent = _agent(stoch=4)
    cfg = LOMPO.make_config("paper").model_config()
    assert (cfg.kl_balance, cfg.free_nats, cfg.kl_scale) == (0.5, 0.0, 2.0)
    assert agent.model_cfg.kl_scale == 2.0 and agent.model_loss(_batch(), [0] * 5)[1][
        "model/kl"] == 2.0
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(3, 4, generator=g).requires_grad_() for _ in range(4)]
    post = {"mean": leaves[0], "std": leaves[1].exp()}
    prior = {"mean": leaves[2], "std": leaves[3].exp()}
    balanced, value = agent.wm.kl_loss(post, prior)  # the model's own KL term
    plain = gaussian_kl(post["mean"], post["std"], prior["mean"], prior["std"]).mean()
    assert value.item() == pytest.approx(plain.item(), rel=1e-6)
    ours = torch.autograd.grad(agent.model_cfg.kl_scale * balanced, leaves, retain_graph=True)
    reference = torch.autograd.grad(plain, leaves)
    for a, b in zip(ours, reference):
        assert torch.allclose(a, b, atol=1e-6)


# Batches and buffers ------------------------------------------------------------------

def test_sequence_transitions_pair_each_row_with_the_next_rows_action_and_reward():
    feat = torch.tensor([[[0.0], [1.0], [2.0]], [[5.0], [6.0], [7.0]]])  # (B=2, T=3, F=1)
    batch = {"action": torch.tensor([[[0.0], [10.0], [20.0]], [[0.0], [50.0], [60.0]]]),
             "reward": torch.tensor([[0.0, 1.0, 2.0], [0.0, 5.0, 6.0]]),
             "discount": torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])}
    out = sequence_transitions(feat, batch)
    assert out["obs"][:, 0].tolist() == [0.0, 1.0, 5.0, 6.0]
    assert out["next_obs"][:, 0].tolist() == [1.0, 2.0, 6.0, 7.0]
    assert out["action"][:, 0].tolist() == [10.0, 20.0, 50.0, 60.0]
    assert out["reward"].tolist() == [1.0, 2.0, 5.0, 6.0]
    assert out["discount"].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_agent_batches_are_half_real_half_imagined():
    real, imagined = LatentBuffer(10), LatentBuffer(10)
    real.add(_transitions(7, 1.0))
    imagined.add(_transitions(10, -1.0))
    g = torch.Generator().manual_seed(0)
    batch = mixed_batch(real.sample(4, g), imagined.sample(4, g))
    assert batch["reward"].tolist() == [1.0] * 4 + [-1.0] * 4
    assert batch["obs"].shape == (8, 2) and batch["action"].shape == (8, 3)
    # Through a real update: the logged halves are the two buffers' rewards.
    agent = _agent(agent_batch_size=5)
    f = agent.feat_dim
    real, imagined = LatentBuffer(10), LatentBuffer(10)
    real.add({**_transitions(6, 1.0, feat=f), "obs": torch.randn(6, f)})
    imagined.add({**_transitions(6, -1.0, feat=f), "obs": torch.randn(6, f)})
    metrics = agent.train_agent(real, imagined)
    assert metrics["real/reward_mean"].item() == 1.0
    assert metrics["imagined/reward_mean"].item() == -1.0


def test_latent_buffer_is_a_ring_and_round_trips():
    def rows(a, b):  # rows a .. b - 1, their rewards a .. b - 1
        return {**_transitions(b - a, 0.0), "reward": torch.arange(a, b).float()}

    buffer = LatentBuffer(4)
    buffer.add(rows(0, 3))
    buffer.add(rows(3, 6))  # rows 3, 4, 5 go to slots 3, 0, 1
    assert buffer.data["reward"].tolist() == [4.0, 5.0, 2.0, 3.0]
    assert (len(buffer), buffer.position) == (4, 2)
    big = LatentBuffer(4)
    big.add(rows(0, 6))  # more than it holds: as if written one by one
    assert big.data["reward"].tolist() == [4.0, 5.0, 2.0, 3.0] and big.position == 2
    partial = LatentBuffer(4)
    partial.add(rows(0, 3))
    f = io.BytesIO()
    torch.save(partial.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    assert state["data"]["reward"].shape == (3,)  # only the rows it holds
    restored = LatentBuffer(4)
    restored.load_state_dict(state)
    assert (len(restored), restored.position) == (3, 3)
    restored.add(rows(3, 5))
    assert restored.data["reward"].tolist() == [4.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="empty"):
        LatentBuffer(3).sample(1, torch.Generator())


def test_rollouts_are_horizon_steps_from_every_start_with_the_penalised_reward():
    torch.manual_seed(0)
    agent = _agent(horizon=4, uncertainty_penalty=5.0)
    batch = _batch(b=3, t=2)
    with torch.no_grad():
        post, _ = agent.wm.rssm.observe(agent.wm.embed(batch), batch["action"],
                                        batch["is_first"])
    start = {k: post[k][:, -1] for k in ("deter", "stoch")}  # N = 3 start states
    out = agent.rollouts(start)
    n, f = 3, agent.feat_dim
    assert set(out) == {*TRANSITION_KEYS, "uncertainty"}
    assert out["obs"].shape == out["next_obs"].shape == (4 * n, f)
    assert out["action"].shape == (4 * n, 3) and out["reward"].shape == (4 * n,)
    assert torch.equal(out["obs"][:n], agent.wm.rssm.feat(start))
    assert torch.equal(out["obs"][n:], out["next_obs"][:-n])  # one chain per start
    assert (out["action"].abs() <= 1).all() and (out["discount"] == 1).all()
    assert (out["uncertainty"] > 0).all()  # three distinct heads disagree
    with torch.no_grad():
        r_hat = agent.wm.reward_of(out["next_obs"])
    assert torch.allclose(out["reward"], r_hat - 5.0 * out["uncertainty"], atol=1e-6)
    assert all(v.dtype == torch.float32 for v in out.values())


# Real updates on a real dataset -------------------------------------------------------

def _train(algorithm, steps, start=0):
    metrics = {}
    for step in range(start, start + steps):
        metrics = algorithm.train_step(step)
        bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
        assert not bad, f"step {step}: non-finite {bad}"
    return metrics


SHORT = {"model_updates": 2, "latent_prefill": 40, "refresh_every": 2, "train_steps": 6}


def test_trains_on_a_real_dataset_and_resumes_from_a_weights_only_state(data_root, tmp_path):
    torch.manual_seed(0)
    algorithm, config = build(data_root, "lompo", dict(target="WW"), SHORT, tmp_path)
    dataset = algorithm.ctx.dataset
    assert "model/kl" in _train(algorithm, 2)
    metrics = _train(algorithm, 1, start=2)  # the first agent update: buffers filled
    assert {"critic/q1", "critic/q2", "actor/q", "imagined/uncertainty"} <= set(metrics)
    assert "imagined/uncertainty" not in _train(algorithm, 1, start=3)  # no refresh
    assert len(algorithm.real) == dataset.num_steps  # every transition of every episode
    assert len(algorithm.latent) >= config.latent_prefill
    assert len(algorithm.latent) % (config.batch_size * config.seq_len * config.horizon) == 0
    # A restart: a weights-only copy of the state in a freshly built algorithm.
    f = io.BytesIO()
    torch.save(algorithm.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    assert not _finite(state)
    torch.manual_seed(1)
    restarted, _ = build(data_root, "lompo", dict(target="WW"), SHORT, tmp_path / "again")
    restarted.load_state_dict(state)
    rng = torch.get_rng_state()
    ahead = _train(algorithm, 2, start=4)  # includes a refresh of the latent buffer
    torch.set_rng_state(rng)
    again = _train(restarted, 2, start=4)
    assert {k: float(v) for k, v in ahead.items()} == {k: float(v) for k, v in again.items()}
    assert torch.equal(algorithm.real.data["obs"], restarted.real.data["obs"])  # rebuilt alike
    obs = {"image": dataset.load_episode(0)["image"][0], "is_first": True}
    action, state = algorithm.policy(obs, None, deterministic=True)
    assert action.shape == (algorithm.ctx.action_dim,) and abs(action).max() <= 1
    assert math.isfinite(algorithm.value(obs, state))


def test_trains_finite_under_bfloat16_autocast(data_root, tmp_path):
    torch.manual_seed(0)
    algorithm, _ = build(data_root, "lompo", dict(target="WW"), SHORT, tmp_path)
    with torch.autocast(**BF16):
        assert torch.is_autocast_enabled("cpu")
        _train(algorithm, 4)
        feat = algorithm.real.data["obs"][:4]  # s = [z, h]
        stoch = algorithm.config.stoch
        rollouts = algorithm.agent.rollouts({"stoch": feat[:, :stoch], "deter": feat[:, stoch:]})
    assert rollouts["reward"].dtype == rollouts["uncertainty"].dtype == torch.float32
    assert algorithm.latent.data["reward"].dtype == torch.float32
    assert not _finite(algorithm.state_dict())


def test_finetune_pretrains_online_then_trains_on_the_target_under_bfloat16(data_root,
                                                                            tmp_path):
    torch.manual_seed(0)
    algorithm, config = build(data_root, "lompo-finetune", dict(pair="WW-WD"),
                              {"pretrain_env_steps": 10, "prefill": 0, "model_updates": 1,
                               "latent_prefill": 40, "train_steps": 4}, tmp_path)
    assert config.pretrain_updates == 2 and algorithm.family == "transfer"
    with torch.autocast(**BF16):
        source = _train(algorithm, 2)
        assert {"source/critic/q1", "source/model/kl", "source/env_steps"} <= set(source)
        assert len(algorithm.learner.replay.episodes) == 1  # one source episode to learn from
        assert "model/kl" in _train(algorithm, 1, start=2)  # the target's world model
        assert len(algorithm.latent) == 0  # source rollouts dropped at the switch
        target = _train(algorithm, 1, start=3)
    assert "critic/q1" in target and not any(k.startswith("source/") for k in target)
    assert len(algorithm.real) == algorithm.ctx.dataset.num_steps
    state = algorithm.state_dict()
    assert not _finite(state) and state["learner"]["episodes"] == 1
    assert LOMPOFinetune.paper_name == "LOMPO Finetune" and LOMPOFinetune.needs_source


def test_agent_phase_never_updates_the_frozen_world_model(data_root, tmp_path):
    torch.manual_seed(0)
    algorithm, config = build(data_root, "lompo", dict(target="WW"), SHORT, tmp_path)
    wm = algorithm.agent.wm
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    _train(algorithm, config.model_updates)
    frozen = {k: v.clone() for k, v in wm.state_dict().items()}
    assert any(not torch.equal(before[k], frozen[k]) for k in frozen)  # it did learn
    grads = [None if p.grad is None else p.grad.clone() for p in wm.parameters()]
    model_steps = {i: int(s["step"]) for i, s in
                   algorithm.agent.optimizers["model"].state_dict()["state"].items()}
    actor = [p.detach().clone() for p in algorithm.agent.actor.parameters()]
    # Every agent update of the schedule, refreshes of the latent buffer included.
    _train(algorithm, config.train_steps - config.model_updates, start=config.model_updates)
    assert all(torch.equal(frozen[k], v) for k, v in wm.state_dict().items())
    # No loss of the agent phase reached the model: its gradients are the last model
    # step's, untouched, and its optimiser took no step.
    for old, p in zip(grads, wm.parameters()):
        assert (old is None and p.grad is None) or torch.equal(old, p.grad)
    assert model_steps == {i: int(s["step"]) for i, s in
                           algorithm.agent.optimizers["model"].state_dict()["state"].items()}
    assert any(not torch.equal(a, p) for a, p in zip(actor, algorithm.agent.actor.parameters()))


def test_target_critics_start_crosswise_as_the_reference():
    """V-D4RL's LOMPO: target_qf1 = deepcopy(qf2), target_qf2 = deepcopy(qf1)."""
    agent = _agent()
    for target, critic in ((agent.target_q1, agent.q2), (agent.target_q2, agent.q1)):
        for a, b in zip(target.parameters(), critic.parameters()):
            assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(agent.q1.parameters(),
                                                    agent.q2.parameters()))


def test_schedule_is_model_updates_then_agent_updates():
    from coworld_bench.errors import ConfigError
    from coworld_bench.tasks import resolve_task

    ww, wd = resolve_task("WW"), resolve_task("WD")
    paper = LOMPO.for_tasks(LOMPO.make_config("paper"), None, ww)
    # SPEC 7b: 25k model updates, then the paper's 100k iterations of the agent; float32.
    assert (paper.model_updates, paper.agent_updates, paper.train_steps) == (25_000, 100_000,
                                                                             125_000)
    assert paper.precision == 32
    assert "the other 100000 are agent updates" in LOMPO.schedule_lines(paper)[0]
    finetune = LOMPOFinetune.for_tasks(LOMPOFinetune.make_config("paper"), wd, ww)
    assert finetune.train_steps == finetune.pretrain_updates + 125_000
    with pytest.raises(ConfigError, match="no agent update"):
        LOMPO.for_tasks(LOMPO.make_config("smoke", {"train_steps": 10}), None, ww)
