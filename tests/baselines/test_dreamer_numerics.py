"""The DreamerV2 core under bfloat16 and against the decisions of SPEC section 7.

bfloat16 autocast on CPU is the same code path as the paper preset's CUDA autocast:
every DreamerV2-based algorithm trains a few real updates under it here.
"""

import math

import pytest
import torch

from baselines.core.actor_critic import ActorCritic
from baselines.core.agent import DreamerAgent
from baselines.core.config import SMOKE_MODEL, DreamerConfig
from baselines.core.losses import lambda_return
from baselines.core.world_model import WorldModel
from coworld_bench.runner import RunRequest, prepare

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _finite(tree, path="") -> list[str]:
    """Paths of the non-finite float tensors in a (nested) state dict."""
    bad = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            bad += _finite(v, f"{path}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad += _finite(v, f"{path}/{i}")
    elif torch.is_tensor(tree) and tree.is_floating_point() and not torch.isfinite(tree).all():
        bad.append(path)
    return bad


def build(data_root, algo, task_args, overrides, tmp_path):
    """The algorithm of a real smoke run (real dataset on disk, real simulators)."""
    from coworld_bench.data import Dataset, collect

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COWORLD_BENCH_DATA", str(data_root))
        run = prepare(RunRequest(algo=algo, preset="smoke", overrides=overrides, device="cpu",
                                 out=str(tmp_path), progress=False, **task_args))
        if run.collect_config is not None:
            collect(run.collect_config, run.dataset_directory, progress=False)
        dataset = Dataset(run.dataset_directory) if run.dataset_directory else None
        algo, _ = run.build(dataset)
    return algo, run.config


# Each algorithm at its smallest schedule that still visits every phase of its update:
# pretraining / model phase, then the target (and source) steps.
BF16_CASES = [
    ("dreamerv2", dict(target="WW"), {}, 2),
    ("offline-dv2", dict(target="DC"), {"model_updates": 2}, 4),
    ("dv2-finetune", dict(pair="BP-DC"), {"pretrain_env_steps": 10}, 4),
    ("dv2-finetune-ewc", dict(pair="BP-DC"), {"pretrain_env_steps": 10, "fisher_batches": 1}, 4),
    ("multitask-dv2", dict(pair="WW-WD"), {"pretrain_env_steps": 10}, 4),
    ("coworld", dict(pair="BP-DC"),
     {"pretrain_env_steps": 10, "target_updates": 2, "source_updates": 2, "rounds": 1}, 6),
    ("coworld-multisource", dict(target="DC"),
     {"sources": "BP,WC", "pretrain_env_steps": 5, "target_updates": 2, "source_updates": 1,
      "rounds": 1}, 5),
]


@pytest.mark.parametrize("algo,task_args,overrides,steps", BF16_CASES,
                         ids=[c[0] for c in BF16_CASES])
def test_every_dreamer_algorithm_trains_finite_under_bfloat16(algo, task_args, overrides, steps,
                                                              data_root, tmp_path):
    torch.manual_seed(0)
    algorithm, config = build(data_root, algo, task_args,
                              {**overrides, "train_steps": steps}, tmp_path)
    with torch.autocast(**BF16):
        assert torch.is_autocast_enabled("cpu")
        for step in range(steps):
            metrics = algorithm.train_step(step)
            bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
            assert not bad, f"{algo} step {step}: non-finite {bad}"
    assert not _finite(algorithm.state_dict()), _finite(algorithm.state_dict())[:5]
    # The last step was a target (offline) step with actor and critic updates.
    last = set(metrics)
    assert any("critic/value" in k for k in last) and any("actor/entropy" in k for k in last)


def _agent(**overrides) -> DreamerAgent:
    cfg = DreamerConfig(**{**SMOKE_MODEL, **overrides})
    return DreamerAgent(cfg, action_dim=4, device=torch.device("cpu"), seed=0)


def _batch(b=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (b, t, 64, 64, 3), generator=g, dtype=torch.uint8),
            "action": torch.rand(b, t, 4, generator=g) * 2 - 1,
            "reward": torch.rand(b, t, generator=g),
            "discount": torch.ones(b, t),
            "is_first": torch.zeros(b, t, dtype=torch.bool)}


def test_lambda_returns_under_autocast_equal_float32():
    """Rewards, values, discounts and lambda-returns stay float32 under bf16 autocast,
    at the scale of DMC values (600-1000) and the paper's gamma 0.995."""
    torch.manual_seed(0)
    agent = _agent(discount=0.995, horizon=8)
    with torch.no_grad():
        agent.ac.slow_critic[-1].bias.fill_(800.0)
        agent.ac.critic[-1].bias.fill_(800.0)
        agent.wm.reward[-1].bias.fill_(5.0)
    post = agent.posterior(_batch())
    with torch.autocast(**BF16):
        _, _, aux = agent.behaviour_loss(post)
        cont = agent.wm.cont_of(aux["traj"]["feat"][1:])
    assert cont.dtype == torch.float32
    for key in ("reward", "discount", "slow_value", "target", "value", "weight"):
        assert aux[key].dtype == torch.float32, key
    assert aux["slow_value"].mean() > 600
    assert torch.allclose(aux["discount"], 0.995 * cont, rtol=1e-6, atol=0)
    reference = lambda_return(aux["reward"].double(), aux["slow_value"].double(),
                              aux["discount"].double(), agent.cfg.lam)
    assert torch.allclose(aux["target"].double(), reference, rtol=1e-5, atol=0)
    # bf16 would have rounded gamma to 0.9961 and the returns by ~5 at this scale.
    bf16 = lambda_return(aux["reward"].bfloat16(), aux["slow_value"].bfloat16(),
                         aux["discount"].bfloat16(), agent.cfg.lam).double()
    assert (bf16 - reference).abs().max() > 1e-5 * reference.abs().max()


FLOOR = 0.5 * math.log(2 * math.pi * math.e * 0.1 ** 2)  # a Normal's entropy at std 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_actor_distribution_is_the_clipped_normal_with_a_floor(dtype):
    """SPEC 7b: mean tanh(x), std 2 sigmoid(s / 2) + 0.1; log pi and the entropy are the
    Normal's; samples lie in [-1, 1] and carry the unclipped sample's gradient; the
    entropy never falls below a std-0.1 Normal's, even at saturated outputs (bf16
    included: nothing is infinite)."""
    torch.manual_seed(0)
    raw = torch.tensor([[30.0, -30.0, 0.2, 1.0, -1e4, -1e4, 0.0, 3.0]], dtype=dtype
                       ).repeat(4000, 1).requires_grad_()
    policy = ActorCritic.policy_of(raw)
    mean = torch.tanh(raw[:, :4].float())
    std = 2 * torch.sigmoid(raw[:, 4:].float() / 2) + 0.1
    assert torch.allclose(policy.mean, mean) and torch.allclose(policy.std, std)
    assert policy.std.min() >= 0.1
    action = policy.rsample()
    assert action.abs().max() <= 1 and (action.abs() == 1 - 1e-6).any()  # clipped, not rescaled
    normal = torch.distributions.Normal(mean, std)
    assert torch.allclose(policy.log_prob(action), normal.log_prob(action.detach()).sum(-1),
                          atol=1e-4)
    assert torch.allclose(policy.entropy(), normal.entropy().sum(-1))
    assert (policy.entropy() >= 4 * FLOOR - 1e-5).all()
    assert torch.isfinite(policy.log_prob(action)).all()
    # Straight-through: d action / d mean is 1 wherever the sample was clipped too.
    (grad,) = torch.autograd.grad(action[:, 0].sum(), raw)
    tanh_grad = 1 - torch.tanh(raw[:, 0].float()) ** 2
    assert torch.allclose(grad[:, 0].float(), tanh_grad.to(dtype).float(), rtol=1e-2)
    assert torch.isfinite(grad).all()


def test_actor_keeps_its_noise_when_a_toy_return_pushes_it_to_the_bound():
    """The failure the tanh-squashed normal had: maximising a return that grows with the
    action (r = a, DreamerV2's dynamics-backprop gradient through the sample) plus
    DreamerV2's entropy bonus drove its entropy to -11.5 and action std to 0.02. The
    clipped Normal's std stays at or above its 0.1 floor and the entropy above a
    std-0.1 Normal's, while the mean goes to the bound."""
    torch.manual_seed(0)
    raw = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=1e-2)
    for _ in range(3000):
        policy = ActorCritic.policy_of(raw.expand(64, 4))
        loss = -policy.rsample().sum(-1).mean() - 1e-4 * policy.entropy().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy = ActorCritic.policy_of(raw)
    assert policy.mean.min() > 0.99  # the return was maximised
    assert policy.std.min() >= 0.1 and policy.entropy().item() >= 2 * FLOOR - 1e-5
    samples = policy.mean + policy.std * torch.randn(20_000, 2)
    assert samples.std(0).min() >= 0.095  # actions are still drawn with std >= 0.1


def test_actor_entropy_term_pushes_the_actor_std_the_right_way():
    """Through ActorCritic.loss: the gradient of ``actor/entropy`` w.r.t. the bias of the
    actor's std outputs is non-zero and, at a small std, negative (the loss is -H)."""
    torch.manual_seed(0)
    agent = _agent()
    with torch.no_grad():  # std = 2 sigmoid(b / 2) + 0.1 = 0.3
        agent.ac.actor[-1].bias[4:].fill_(2 * math.log(0.1 / 0.9))
    post = agent.posterior(_batch())
    losses, _, _ = agent.behaviour_loss(post)
    losses["actor/entropy"].backward()
    grad = agent.ac.actor[-1].bias.grad[4:]
    assert (grad < 0).all()


def test_offline_dv2_kl_trains_exactly_the_head_of_each_step():
    torch.manual_seed(0)
    cfg = DreamerConfig(**{**SMOKE_MODEL, "ensemble": 3, "free_nats": 0.0})
    wm = WorldModel(cfg, action_dim=4)
    batch = _batch(t=2)

    def trained_heads(heads):
        wm.zero_grad(set_to_none=True)
        losses, _, _ = wm.loss(batch, heads=heads)
        losses["model/kl"].backward()
        return [i for i, h in enumerate(wm.rssm.prior_heads)
                if h[0].weight.grad is not None and h[0].weight.grad.abs().sum() > 0]

    assert trained_heads([2, 2]) == [2]
    assert trained_heads([0, 1]) == [0, 1]
    assert trained_heads(None) == [0]


def test_offline_dv2_draws_one_head_per_time_step(data_root, tmp_path):
    algorithm, config = build(data_root, "offline-dv2", dict(target="DC"),
                              {"model_updates": 2, "train_steps": 2}, tmp_path)
    draws = [algorithm.draw_heads(config.seq_len) for _ in range(20)]
    assert all(len(d) == config.seq_len for d in draws)
    assert {h for d in draws for h in d} == set(range(config.ensemble))
    # Behaviour learning on the frozen model puts no gradient into it.
    wm = algorithm.agent.wm
    wm.zero_grad(set_to_none=True)
    metrics = algorithm.train_step(config.model_updates)
    assert "critic/value" in metrics and "model/image" not in metrics
    assert all(p.grad is None for p in wm.parameters())


def test_relabelled_reward_trains_the_whole_source_model(data_root, tmp_path):
    """(B) after SPEC section 7: the relabelled term's gradient reaches the source
    encoder and RSSM, not only the reward head."""
    algorithm, _ = build(data_root, "coworld", dict(pair="BP-DC"), {}, tmp_path)
    source = algorithm.sources[0]
    batch = source.agent.batch(algorithm.sampler)
    losses, scales, _ = algorithm.source_model_loss(source, batch, batch, eta=0.5)
    assert scales["model/relabel"] == pytest.approx(0.5) and scales["model/reward"] == 0.5
    wm = source.agent.wm
    parts = {"encoder": wm.encoder, "rssm": wm.rssm, "reward": wm.reward}
    grads = torch.autograd.grad(losses["model/relabel"],
                                [p for m in parts.values() for p in m.parameters()],
                                allow_unused=True)
    it = iter(grads)
    for name, module in parts.items():
        norm = sum(float(g.abs().sum()) for p, g in zip(module.parameters(), it)
                   if g is not None)
        assert norm > 0, f"no gradient into the source {name}"


def test_windows_start_from_the_initial_state_and_a_zero_action():
    """A window that starts mid-episode (is_first False on row 0, a real previous
    action) is treated as a start: its first prior equals that of the initial state
    with a zero action, whatever the stored action."""
    torch.manual_seed(0)
    wm = WorldModel(DreamerConfig(**SMOKE_MODEL), action_dim=4)
    batch = _batch(t=3)
    embed = wm.embed(batch)
    with torch.no_grad():
        _, prior = wm.rssm.observe(embed, batch["action"], batch["is_first"])
        other = batch["action"].clone()
        other[:, 0] = 0.7
        _, prior_other = wm.rssm.observe(embed, other, batch["is_first"])
        start = wm.rssm.img_step(wm.rssm.initial(3, "cpu"), torch.zeros(3, 4))
    assert torch.equal(prior["deter"][:, 0], start["deter"])
    assert torch.equal(prior_other["deter"][:, 0], start["deter"])


def test_layernorm_gru_keeps_the_state_at_initialisation_and_continuous_std_is_sigmoid2():
    cfg = DreamerConfig(**{**SMOKE_MODEL, "latent": "continuous"})
    wm = WorldModel(cfg, action_dim=4)
    gru = wm.rssm.gru
    assert gru.update_bias == -1.0 and isinstance(gru.norm, torch.nn.LayerNorm)
    # Heads carry no normalisation (DreamerV2's norm: none).
    for head in (wm.reward, wm.cont, ActorCritic(cfg, wm.rssm.feat_dim, 4).actor):
        assert not any(isinstance(m, torch.nn.LayerNorm) for m in head.modules())
    raw = torch.tensor([[0.0, 0.0, 0.0, 0.0, -100.0, 0.0, 2.0, 100.0]])
    stats = wm.rssm._stats(raw)
    expected = 2 * torch.sigmoid(torch.tensor([-100.0, 0.0, 2.0, 100.0]) / 2) + 0.1
    assert torch.allclose(stats["std"][0], expected)
    assert stats["std"].min() >= 0.1 and stats["std"].max() <= 2.1


def test_optimize_rejects_a_term_without_a_scale_and_bf16_terms():
    from baselines.core.optim import optimize

    agent = _agent()

    def missing_scale():
        losses, scales, aux = agent.model_loss(_batch())
        losses["model/extra"] = losses["model/kl"] * 0
        return losses, scales, aux

    with pytest.raises(ValueError, match="model/extra"):
        agent.optimize(missing_scale)

    def forgotten_term():
        losses, scales, aux = agent.model_loss(_batch())
        del losses["model/reward"]
        return losses, scales, aux

    with pytest.raises(ValueError, match="model/reward"):
        agent.optimize(forgotten_term)

    def half():
        losses, scales, aux = agent.model_loss(_batch())
        losses["model/kl"] = losses["model/kl"].bfloat16()
        return losses, scales, aux

    with pytest.raises(TypeError, match="model/kl"):
        optimize(agent.optimizers, half)


def test_optimize_clips_each_part_and_steps_only_the_parts_it_trains():
    torch.manual_seed(0)
    agent = _agent(grad_clip=1e-3)
    actor_before = [p.detach().clone() for p in agent.ac.actor.parameters()]
    metrics, _ = agent.optimize(agent.model_loss, _batch())
    assert float(metrics["model/grad_norm"]) > 1e-3  # the norm before clipping is logged
    assert set(k.split("/")[0] for k in metrics) == {"model"}
    assert all(torch.equal(a, p) for a, p in zip(actor_before, agent.ac.actor.parameters()))
    assert all(torch.isfinite(p).all() for p in agent.wm.parameters())


def test_compiled_loops_give_the_eager_numbers(data_root, tmp_path):
    """`run --compile BACKEND` (the default on CUDA): the posterior loop and imagination
    go through torch.compile with static shapes; here with the aot_eager backend (the
    graph capture and autograd tracing of the GPU path, without code generation): the
    same metrics as eager CoWorld updates, and no fallback taken; bench's operator
    count leaves the compiled graphs in use."""
    from baselines.core.compile import Compiled
    from coworld_bench.bench import build, count_ops, profiled_calls

    results = []
    for backend in ("aot_eager", "off"):
        algorithm, _, _ = build("coworld", "smoke", data_root, tmp_path / backend, "cpu",
                                compile=backend)
        observe = algorithm.target.wm.rssm.observe
        assert isinstance(observe, Compiled) == (backend != "off")
        torch.manual_seed(0)
        metrics = {}
        for name, update in algorithm.timed_steps().items():
            for _ in range(2):
                metrics.update({f"{name}/{k}": float(v) for k, v in update().items()})
        if backend != "off":
            assert not observe.failed and not algorithm.target.ac.imagine.failed
            # `bench` counts every aten call under a dispatch mode: the compiled loops run
            # eagerly there and keep their compiled graphs for later calls (before the
            # fix, the profiler saw eager calls ever after: 2803 against 2960 here).
            step = algorithm.target_step
            dispatched = profiled_calls(step)
            count_ops(step)
            assert profiled_calls(step) == dispatched
        results.append(metrics)
    compiled, eager = results
    assert compiled.keys() == eager.keys()
    for key in eager:
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5), key


def test_ewc_fisher_is_the_mean_of_per_sample_squared_gradients():
    """SPEC 7b: EWC's diagonal Fisher equals a brute-force loop over samples (one
    backward pass each: sequences for the world model, posterior states for the actor's
    -log pi, imagined states for the critic's NLL), and is not the square of the
    batch-mean gradient (which is ~F / N)."""
    from baselines.dv2_finetune_ewc import ewc_fisher, ewc_samples

    agent = _agent()
    batches = [_batch(b=3, t=5, seed=1), _batch(b=3, t=5, seed=2)]
    torch.manual_seed(0)
    fisher = ewc_fisher(agent, batches)
    torch.manual_seed(0)  # the same draws: the samples first, then the model's posteriors
    actor_rows, critic_rows = ewc_samples(agent, batches)

    def brute(module, losses):
        params = [p for p in module.parameters() if p.requires_grad]
        total, n = [torch.zeros_like(p) for p in params], 0
        for loss in losses:
            for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc += g ** 2
            n += 1
        return [t / n for t in total]

    def model_losses():
        for batch in batches:
            for i in range(3):
                losses, scales, _ = agent.model_loss({k: v[i:i + 1] for k, v in batch.items()})
                yield sum(scales[k] * v for k, v in losses.items())

    ac = agent.ac
    actor_losses = (-ac.policy(feat[i:i + 1]).log_prob(action[i:i + 1]).sum()
                    for feat, action in actor_rows for i in range(len(feat)))
    critic_losses = (0.5 * ((ac.value(feat[i:i + 1]) - target[i:i + 1]) ** 2).sum()
                     for feat, target in critic_rows for i in range(len(feat)))
    expected = {"model": brute(agent.wm, model_losses()),
                "actor": brute(ac.actor, actor_losses), "critic": brute(ac.critic, critic_losses)}
    for part, values in expected.items():
        got = list(fisher[part].values())
        assert len(got) == len(values)
        for g, e in zip(got, values):
            assert torch.allclose(g, e, rtol=1e-4, atol=1e-10), part
    # The batch form squares the mean gradient: far smaller at N = 30 states.
    feat, action = actor_rows[0]
    loss = -ac.policy(feat).log_prob(action).mean()
    batch_form = sum((g ** 2).sum() for g in torch.autograd.grad(loss, list(ac.actor.parameters())))
    per_sample = sum(v.sum() for v in fisher["actor"].values())
    assert batch_form < 0.5 * per_sample
