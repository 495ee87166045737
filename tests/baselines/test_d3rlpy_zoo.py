"""d3rlpy's algorithms through the registry: d3rlpy's own update on our batches,
TD3+BC's actor loss by hand, checkpoints that resume bit-exactly."""

import io
import os

import numpy as np
import pytest
import torch

from baselines.d3rlpy_zoo import D3BC, D3CQL, D3IQL, D3TD3BC
from coworld_bench.algorithm import RunContext, field_docs
from coworld_bench.data import CollectConfig, Dataset, TransitionSampler, collect
from coworld_bench.data.d3rlpy_adapter import import_d3rlpy, transition_batch
from coworld_bench.registry import get
from coworld_bench.tasks import resolve_task

ALGORITHMS = [D3TD3BC, D3CQL, D3IQL, D3BC]


@pytest.fixture(scope="module")
def ww_dataset(tmp_path_factory):
    """Two random Walker Walk episodes from the real simulator."""
    out = tmp_path_factory.mktemp("d3rlpy-zoo") / "ww"
    collect(CollectConfig(task_id="WW", quality="random", episodes=2, seed=0,
                          env={"fast_render": True}), out, progress=False)
    return Dataset(out)


def build(cls, dataset, seed=0, **overrides):
    ctx = RunContext(target=resolve_task("WW"), source=None, action_dim=7,
                     image_shape=(64, 64, 3), state_dim=0, dataset=dataset,
                     make_source_env=None, device=torch.device("cpu"), seed=seed)
    return cls(cls.make_config("smoke", {"batch_size": 4, **overrides}), ctx)


def parameters(algo):
    return {f"{name}.{k}": v.detach().clone() for name, part in algo.parts.items()
            if isinstance(part, torch.nn.Module) for k, v in part.state_dict().items()}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_registered_with_their_descriptions():
    for name, cls in [("d3rlpy-td3bc", D3TD3BC), ("d3rlpy-cql", D3CQL), ("d3rlpy-iql", D3IQL),
                      ("d3rlpy-bc", D3BC)]:
        assert get(name) is cls
        assert cls.family == "model-free" and "d3rlpy" in cls.paper_name
        assert "d3rlpy's implementation" in cls.description
        assert cls.has_value is (cls is not D3BC)
        docs = field_docs(cls.Config)
        assert all(docs.get(f) for f in cls.Config.field_names()), cls


def test_paper_preset_is_d3rlpys_defaults():
    d3rlpy = import_d3rlpy()
    td3bc, cql = D3TD3BC.make_config("paper"), D3CQL.make_config("paper")
    iql, bc = D3IQL.make_config("paper"), D3BC.make_config("paper")
    theirs = d3rlpy.algos.TD3PlusBCConfig()
    assert (td3bc.actor_lr, td3bc.critic_lr, td3bc.alpha, td3bc.batch_size) == (
        theirs.actor_learning_rate, theirs.critic_learning_rate, theirs.alpha, theirs.batch_size)
    theirs = d3rlpy.algos.CQLConfig()
    assert (cql.actor_lr, cql.critic_lr, cql.temp_lr, cql.alpha, cql.alpha_lr,
            cql.alpha_threshold, cql.conservative_weight, cql.n_action_samples) == (
        theirs.actor_learning_rate, theirs.critic_learning_rate, theirs.temp_learning_rate,
        theirs.initial_alpha, theirs.alpha_learning_rate, theirs.alpha_threshold,
        theirs.conservative_weight, theirs.n_action_samples)
    theirs = d3rlpy.algos.IQLConfig()
    assert (iql.actor_lr, iql.critic_lr, iql.expectile, iql.weight_temp, iql.max_weight) == (
        theirs.actor_learning_rate, theirs.critic_learning_rate, theirs.expectile,
        theirs.weight_temp, theirs.max_weight)
    theirs = d3rlpy.algos.BCConfig()
    assert (bc.lr, bc.batch_size) == (theirs.learning_rate, theirs.batch_size)
    encoder = d3rlpy.models.PixelEncoderFactory()
    for config in (td3bc, cql, iql, bc):
        assert config.train_steps == 300_000 and config.frame_stack == 3
        assert config.encoder == "nature" and config.encoder_feature_size == encoder.feature_size


def test_td3bc_update_is_d3rlpys_own(ww_dataset):
    """Our train_step = d3rlpy's TD3PlusBC.update on the picked batch: a separately
    built d3rlpy algorithm with the same weights, batch and torch RNG state ends with
    identical weights and losses; the actor is updated on every second step only."""
    algo = build(D3TD3BC, ww_dataset)
    reference = algo.algo.config.create(device="cpu:0")  # d3rlpy's config, a new algo
    reference.create_impl((6, 64, 64), 7)
    parts = reference.impl.modules.create_checkpointer("cpu:0").modules
    for name, part in algo.parts.items():
        parts[name].load_state_dict(part.state_dict())
    before = parameters(algo)

    sampler = TransitionSampler(ww_dataset, 4, frame_stack=2, seed=0)  # our index stream
    for step, keys in enumerate([{"critic_loss", "actor_loss", "bc_loss"}, {"critic_loss"}]):
        batch = transition_batch(algo.buffer, *sampler.sample_indices())
        rng = torch.get_rng_state()
        ours = algo.train_step(step)
        torch.set_rng_state(rng)
        theirs = reference.update(batch)
        assert set(ours) == keys and ours == theirs
    assert algo.algo.grad_step == reference.grad_step == 2
    after = parameters(algo)
    assert_same_parameters(after, {f"{n}.{k}": v for n, p in parts.items()
                                   if isinstance(p, torch.nn.Module)
                                   for k, v in p.state_dict().items()})
    for name in ("policy", "q_funcs", "targ_policy", "targ_q_funcs"):
        changed = [k for k in after if k.startswith(name + ".")
                   and not torch.equal(after[k], before[k])]
        assert changed, name


def test_td3bc_actor_loss_by_hand():
    """d3rlpy's TD3+BC actor loss, lambda * -mean Q1(s, pi) + mean (pi - a)^2 with
    lambda = alpha / mean|Q1| not differentiated, on a tiny critic of known weights:
    Q1(s, a) = 2 relu(s) + 3 relu(a) - 4 (critic 2 differs: only Q1 counts)."""
    d3rlpy = import_d3rlpy()
    from d3rlpy.models.torch import ActionOutput
    from d3rlpy.torch_utility import TorchMiniBatch

    vector = d3rlpy.models.VectorEncoderFactory(hidden_units=[2])
    algo = d3rlpy.algos.TD3PlusBCConfig(alpha=2.5, actor_encoder_factory=vector,
                                        critic_encoder_factory=vector).create(device="cpu:0")
    algo.create_impl((1,), 1)
    with torch.no_grad():
        for q, (w, bias) in zip(algo.impl.modules.q_funcs, [([2.0, 3.0], -4.0), ([1.0, 1.0], 9.0)]):
            q._encoder._layers[0].weight.copy_(torch.eye(2))
            q._encoder._layers[0].bias.zero_()
            q._fc.weight.copy_(torch.tensor([w]))
            q._fc.bias.fill_(bias)
    s = torch.tensor([[1.0], [2.0]])
    a = torch.tensor([[0.5], [-0.5]])
    pi = torch.tensor([[0.2], [0.4]], requires_grad=True)
    batch = TorchMiniBatch(observations=s, actions=a, rewards=torch.zeros(2, 1),
                           next_observations=s, next_actions=a,
                           returns_to_go=torch.zeros(2, 1), terminals=torch.zeros(2, 1),
                           intervals=torch.ones(2, 1), device="cpu:0")
    loss = algo.impl.compute_actor_loss(batch, ActionOutput(mu=pi, squashed_mu=pi, logstd=None))
    # Q1 = 2 + 0.6 - 4 = -1.4 and 4 + 1.2 - 4 = 1.2: mean|Q1| = 1.3, mean Q1 = -0.1.
    lam = 2.5 / 1.3
    bc = ((0.5 - 0.2) ** 2 + (-0.5 - 0.4) ** 2) / 2  # 0.45
    assert loss.bc_loss.item() == pytest.approx(bc, rel=1e-6)
    assert loss.actor_loss.item() == pytest.approx(lam * 0.1 + bc, rel=1e-6)
    loss.actor_loss.backward()
    # d/dpi_i = -lam * 3 / 2 + (pi_i - a_i): lambda carries no gradient.
    np.testing.assert_allclose(pi.grad[:, 0].numpy(),
                               [-lam * 1.5 + (0.2 - 0.5), -lam * 1.5 + (0.4 + 0.5)], rtol=1e-6)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=lambda c: c.name)
def test_checkpoint_round_trip_resumes_bit_exactly(cls, ww_dataset):
    """After a few updates, state_dict() through torch.save / torch.load(weights_only)
    into a fresh instance built from another seed: the next update is identical."""
    algo = build(cls, ww_dataset)
    for step in range(2):
        algo.train_step(step)
    saved = io.BytesIO()
    torch.save(algo.state_dict(), saved)
    expected = algo.train_step(2)  # TD3+BC: a step with an actor update
    expected_parameters = parameters(algo)

    fresh = build(cls, ww_dataset, seed=1)
    assert any(not torch.equal(v, expected_parameters[k])
               for k, v in parameters(fresh).items())
    saved.seek(0)
    fresh.load_state_dict(torch.load(saved, weights_only=True))
    assert fresh.algo.grad_step == 2
    assert fresh.train_step(2) == expected
    assert_same_parameters(parameters(fresh), expected_parameters)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=lambda c: c.name)
def test_policy_and_value_on_stacked_frames(cls, ww_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # d3rlpy must write nothing (no d3rlpy_logs/)
    algo = build(cls, ww_dataset)
    algo.train_step(0)
    images = ww_dataset.read(0, "image", 0, 3)
    state = algo.initial_state()
    for t, image in enumerate(images):
        action, state = algo.policy({"image": image, "is_first": t == 0}, state, True)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
        value = algo.value({"image": image, "is_first": t == 0}, state)
        if cls.has_value:
            assert np.isfinite(value)
        else:
            assert value is None
    # The policy sees what training sees: frames 1 and 2 of the episode.
    x = np.concatenate(state)[None]
    np.testing.assert_array_equal(x[0], transition_batch(algo.buffer, [0], [2])
                                  .observations[0].astype(np.uint8))
    assert os.listdir(tmp_path) == []
