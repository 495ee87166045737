"""The DrQ-v2 backbone's pieces and the DrQ+BC / CQL / BC losses against hand-computed
values."""

import math

import pytest
import torch

from baselines.core.drq import TruncatedNormal, cql_penalty, td3_bc_actor_loss, td_loss
from baselines.core.schedules import linear_schedule
from baselines.core.nets import random_shift, soft_update


def test_random_shift_stays_inside_the_padding_and_differs_per_sample():
    # Every pixel of a shifted image is a pixel of the replicate-padded one, at an
    # offset of at most pad in each direction; samples of a batch get their own shift.
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    batch = image.expand(16, 1, 64, 64)
    out = random_shift(batch, pad=4, generator=torch.Generator().manual_seed(1))
    offsets = set()
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4), mode="replicate")[0]
    for b in range(16):
        matches = [(y, x) for y in range(9) for x in range(9)
                   if torch.equal(padded[:, y:y + 64, x:x + 64], out[b])]
        assert len(matches) == 1, "the output is not one crop of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 4  # 16 samples, 81 possible shifts: they differ
    again = random_shift(batch, pad=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # and are reproducible under a generator


def test_td3_bc_actor_loss_by_hand():
    q = torch.tensor([[2.0], [-4.0]], requires_grad=True)
    action = torch.tensor([[0.5, 0.0], [0.0, -0.5]])
    data = torch.tensor([[0.0, 0.0], [0.0, 0.5]])
    # lambda = 2.5 / mean|Q| = 2.5 / 3; mean Q = -1; BC = (0.25 + 0 + 0 + 1) / 4
    expected = -(2.5 / 3.0) * (-1.0) + 0.3125
    loss = td3_bc_actor_loss(q, action, data, alpha=2.5)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # lambda is a constant: d/dQ_i = -lambda / B
    assert torch.allclose(q.grad, torch.full((2, 1), -(2.5 / 3.0) / 2))


def test_cql_penalty_by_hand():
    # one state, one action of each kind (N = 1), temperature 1, weight 10
    q_data = torch.tensor([[1.0]])
    q_random, q_current, q_next = (torch.tensor([[[v]]]) for v in (0.0, 2.0, 3.0))
    lse = math.log(math.exp(0.0) + math.exp(1.0) + math.exp(3.0) + math.exp(2.0))
    assert cql_penalty(q_data, q_random, q_current, q_next, 10.0).item() == pytest.approx(
        10.0 * (lse - 1.0), rel=1e-6)
    # temperature t: t * logsumexp(Q / t)
    lse2 = 2.0 * math.log(sum(math.exp(v / 2.0) for v in (0.0, 1.0, 3.0, 2.0)))
    assert cql_penalty(q_data, q_random, q_current, q_next, 1.0, 2.0).item() == pytest.approx(
        lse2 - 1.0, rel=1e-6)
    # a batch of two states with N = 2: the logsumexp is per state, then averaged
    q_data = torch.tensor([[0.0], [1.0]])
    q_random = torch.tensor([[[0.0], [0.0]], [[1.0], [1.0]]])
    q_current = torch.zeros(2, 2, 1)
    q_next = torch.zeros(2, 2, 1)
    per_state = [math.log(7 * math.exp(0.0)), math.log(3 * math.exp(1.0) + 4)]
    expected = sum(per_state) / 2 - 0.5
    assert cql_penalty(q_data, q_random, q_current, q_next, 1.0).item() == pytest.approx(expected)


def test_td_loss_by_hand():
    q1, q2, target = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]]), torch.ones(2, 1)
    assert td_loss(q1, q2, target).item() == pytest.approx(0.5 + 1.0)


def test_truncated_normal_clips_noise_and_clamps_with_a_straight_through_gradient():
    loc = torch.tensor([0.9, -0.2, 0.0], requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(3, generator=torch.Generator().manual_seed(0)) * 2.0
    sample = TruncatedNormal(loc, 2.0).sample(clip=0.3, generator=gen)
    expected = (loc.detach() + noise.clamp(-0.3, 0.3)).clamp(-1 + 1e-6, 1 - 1e-6)
    assert torch.allclose(sample, expected)
    sample.sum().backward()
    assert torch.equal(loc.grad, torch.ones(3))  # clamped or not, the gradient passes


def test_linear_schedule_and_soft_update():
    assert linear_schedule(0, 1.0, 0.1, 100) == 1.0
    assert linear_schedule(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_schedule(500, 1.0, 0.1, 100) == pytest.approx(0.1)
    net, target = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0), net.bias.fill_(0.0), target.weight.fill_(0.0)
        target.bias.fill_(1.0)
    soft_update(net, target, 0.01)
    assert target.weight.item() == pytest.approx(0.01) and target.bias.item() == pytest.approx(0.99)


# How the updates are wired, on a real smoke dataset ---------------------------------------

def _wired(data_root, tmp_path, algo_name):
    """The algorithm of a smoke run on WW, with every ``_step`` recorded: which modules
    held a gradient after the step's backward (grads cleared before it) and which
    changed."""
    from tests.baselines.test_dreamer_numerics import build

    torch.manual_seed(0)
    algo, _ = build(data_root, algo_name, dict(target="WW"), {}, tmp_path)
    modules = {"encoder": algo.encoder, "actor": algo.actor, "critic": algo.critic}
    steps = []
    original = algo._step

    def recorded(parts, loss):
        for module in modules.values():
            module.zero_grad(set_to_none=True)
        before = {k: [p.detach().clone() for p in m.parameters()] for k, m in modules.items()}
        original(parts, loss)
        steps.append({
            "parts": parts,
            "grad": {k for k, m in modules.items()
                     if any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())},
            "changed": {k for k, m in modules.items()
                        if any(not torch.equal(a, p) for a, p in zip(before[k], m.parameters()))}})
    algo._step = recorded
    return algo, steps


def test_drq_bc_critic_loss_trains_the_encoder_and_its_actor_loss_does_not(data_root, tmp_path):
    algo, steps = _wired(data_root, tmp_path, "drq-bc")
    algo.train_step(0)
    critic, actor = steps
    assert critic["parts"] == ("encoder", "critic")
    assert critic["grad"] == {"encoder", "critic"}  # the actor is not in the TD loss
    assert critic["changed"] == {"encoder", "critic"}
    assert actor["parts"] == ("actor",)
    # The actor reads detached features: no gradient reaches the encoder. Q(s, pi(s))
    # passes gradient through the critic's weights, which the actor's step leaves alone.
    assert "encoder" not in actor["grad"] and "actor" in actor["grad"]
    assert actor["changed"] == {"actor"}


def test_cql_conservative_term_trains_only_the_critic_and_its_encoder(data_root, tmp_path):
    algo, steps = _wired(data_root, tmp_path, "cql")
    batch = algo.batch()
    features = algo.encoder(batch["image"])
    with torch.no_grad():
        next_features = algo.encoder(batch["next_image"])
    q1, q2 = algo.critic(features, batch["action"])
    for module in (algo.encoder, algo.actor, algo.critic):
        module.zero_grad(set_to_none=True)
    penalty, metrics = algo.critic_penalty(features, next_features, batch["action"], q1, q2, 0.5)
    assert set(metrics) == {"critic/cql1", "critic/cql2"}
    penalty.backward()
    assert all(p.grad is None for p in algo.actor.parameters())  # policy actions: no gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algo.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algo.encoder.parameters())
    # In the update: the critic's step carries the term, the actor's loss is -Q alone.
    metrics = algo.train_step(0)
    critic, actor = steps
    assert critic["changed"] == {"encoder", "critic"} and actor["changed"] == {"actor"}
    assert "encoder" not in actor["grad"]
    assert metrics["critic/loss"] > metrics["critic/cql1"] + metrics["critic/cql2"] - 1e-4


def test_drq_bc_takes_three_step_targets_and_cql_one():
    from coworld_bench import registry

    for preset in ("smoke", "quick", "paper"):
        assert registry.get("drq-bc").make_config(preset).n_step == 3  # V-D4RL's command
        assert registry.get("cql").make_config(preset).n_step == 1
