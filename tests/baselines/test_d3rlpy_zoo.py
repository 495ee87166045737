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


def test_registered_with_documented_settings():
    for name, cls in [("d3rlpy-td3bc", D3TD3BC), ("d3rlpy-cql", D3CQL), ("d3rlpy-iql", D3IQL),
                      ("d3rlpy-bc", D3BC)]:
        assert get(name) is cls
        assert cls.family == "model-free"
        assert cls.has_value is (cls is not D3BC)
        docs = field_docs(cls.Config)
        assert all(docs.get(f) for f in cls.Config.field_names()), cls


# d3rlpy's reproductions/offline/*.py (d3rlpy 2.x), the values each passes to its
# config, written out here as the script has them. The scripts' state-only settings
# (vector encoders, a standard observation scaler) and their 500k length are not ours.
SCRIPTS = {
    D3TD3BC: dict(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256,
                  target_smoothing_sigma=0.2, target_smoothing_clip=0.5, alpha=2.5,
                  update_actor_interval=2),
    D3CQL: dict(actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
                batch_size=256, n_action_samples=10, alpha_learning_rate=0.0,
                conservative_weight=5.0),  # 5.0: every dataset but D4RL's medium-v0
    D3IQL: dict(actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256,
                weight_temp=3.0, max_weight=100.0, expectile=0.7),
}


@pytest.mark.parametrize("cls", [D3TD3BC, D3CQL, D3IQL, D3BC], ids=lambda c: c.name)
def test_built_d3rlpy_config_is_the_reproduction_script(cls, ww_dataset):
    """The config d3rlpy is actually given at the paper preset (the algorithm built on a
    real dataset), field by field against the script; BC has no script: d3rlpy's
    defaults."""
    d3rlpy = import_d3rlpy()
    ctx = RunContext(target=resolve_task("WW"), source=None, action_dim=7,
                     image_shape=(64, 64, 3), state_dim=0, dataset=ww_dataset,
                     make_source_env=None, device=torch.device("cpu"), seed=0)
    # The paper preset's settings, on a small encoder (the config fields under test
    # do not depend on it; building d3rlpy's Nature encoders x 6 networks is slow).
    config = cls.make_config("paper", {"encoder": "small", "encoder_feature_size": 32})
    built = cls(config, ctx).algo.config
    expected = SCRIPTS.get(cls) or dict(learning_rate=1e-3, batch_size=100)
    if cls is D3BC:
        defaults = d3rlpy.algos.BCConfig()
        assert (defaults.learning_rate, defaults.batch_size) == (1e-3, 100)
    for field, value in expected.items():
        assert getattr(built, field) == value, field
    assert built.gamma == 0.99
    assert isinstance(built.observation_scaler, d3rlpy.preprocessing.PixelObservationScaler)
    assert config.train_steps == 300_000 and config.frame_stack == 3
    if cls is D3CQL:
        assert built.initial_alpha == 1.0  # fixed: alpha's learning rate is 0
    if cls is D3IQL:
        # ReturnBasedRewardScaler(multiplier=1000.0), fitted on this dataset's returns...
        scaler = built.reward_scaler
        assert isinstance(scaler, d3rlpy.preprocessing.ReturnBasedRewardScaler)
        returns = [float(ww_dataset.read(e, "reward", 1, ww_dataset.lengths[e] + 1).sum())
                   for e in range(len(ww_dataset.lengths))]
        assert scaler.multiplier == 1000.0
        assert scaler.return_max == pytest.approx(max(returns), rel=1e-6)
        assert scaler.return_min == pytest.approx(min(returns), rel=1e-6)
        # ... and the actor's Adam on a cosine schedule over the whole run.
        schedule = built.actor_optim_factory.lr_scheduler_factory
        assert isinstance(schedule, d3rlpy.optimizers.CosineAnnealingLRFactory)
        assert schedule.T_max == config.train_steps
        assert built.critic_optim_factory.lr_scheduler_factory is None
    else:
        assert built.reward_scaler is None


def test_iql_actor_lr_follows_the_cosine_and_values_are_in_reward_units(ww_dataset):
    algo = build(D3IQL, ww_dataset, train_steps=4)
    actor_optim = algo.algo.impl.modules.actor_optim.optim
    lrs = []
    for step in range(4):
        lrs.append(actor_optim.param_groups[0]["lr"])
        algo.train_step(step)
    lr = algo.config.actor_lr
    np.testing.assert_allclose(lrs, [lr * (1 + np.cos(np.pi * t / 4)) / 2 for t in range(4)],
                               rtol=1e-6)
    assert algo.algo.impl.modules.critic_optim.optim.param_groups[0]["lr"] == algo.config.critic_lr
    image = ww_dataset.read(0, "image", 0, 1)[0]
    state = algo.initial_state()
    _, state = algo.policy({"image": image, "is_first": True}, state, True)
    x = np.concatenate(state)[None]
    scaled = float(algo.algo.predict_value(x, algo.algo.predict(x))[0])
    scaler = algo.algo.config.reward_scaler
    assert algo.value({"image": image, "is_first": True}, state) == pytest.approx(
        scaled * (scaler.return_max - scaler.return_min) / 1000.0, rel=1e-5)


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
