"""CURL's losses, crops and EMA against hand-computed values, and a few real updates
on a real (smoke) dataset, in float32 and under bfloat16 autocast."""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines.curl import (
    actor_loss, bounded_log_std, center_crop, contrastive_logits, contrastive_loss,
    critic_loss, random_crop, squashed_gaussian, temperature_loss,
)
from baselines.core.nets import soft_update
from coworld_bench.runner import RunRequest, prepare

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


# Contrastive loss ----------------------------------------------------------------------

def test_bilinear_logits_and_cross_entropy_by_hand():
    queries = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    keys = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    W = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # not symmetric: q W k^T != q W^T k^T
    # W k^T = [[1,2],[3,4]] @ [[1,0],[1,2]] = [[3,4],[7,8]]
    # q W k^T: row 0 = [3, 4]; row 1 = [3-7, 4-8] = [-4, -4]
    # minus row max (4, -4): [[-1, 0], [0, 0]]
    logits = contrastive_logits(queries, keys, W)
    assert torch.equal(logits, torch.tensor([[-1.0, 0.0], [0.0, 0.0]]))
    # labels (0, 1): row 0: -log(e^-1 / (e^-1 + 1)) = 1 + log(1 + e^-1) = 1.3132617
    #                row 1: -log(1/2) = 0.6931472;  mean 1.0032044
    assert contrastive_loss(logits).item() == pytest.approx(1.0032044, abs=1e-6)


def test_contrastive_loss_is_small_when_positives_dominate_the_diagonal():
    logits = torch.tensor([[0.0, -5.0, -5.0], [-5.0, 0.0, -5.0], [-5.0, -5.0, 0.0]])
    # every row: -log(1 / (1 + 2 e^-5))
    assert contrastive_loss(logits).item() == pytest.approx(math.log(1 + 2 * math.exp(-5)))
    # The positives moved off the diagonal: every row -log(e^-5 / (1 + 2 e^-5))
    assert contrastive_loss(logits.roll(1, dims=1)).item() == pytest.approx(
        5 + math.log(1 + 2 * math.exp(-5)))


# Crops ---------------------------------------------------------------------------------

def _coordinate_images(batch: int, size: int = 8) -> torch.Tensor:
    """image[b, c, y, x] = 1000 c + 10 y + x (the same for every b)."""
    c = torch.arange(2)[:, None, None] * 1000
    y = torch.arange(size)[None, :, None] * 10
    x = torch.arange(size)[None, None, :]
    return (c + y + x).float().expand(batch, -1, -1, -1)


def test_random_crop_bounds_and_the_same_window_for_every_channel():
    images = _coordinate_images(400)
    crops = random_crop(images, 5, torch.Generator().manual_seed(0))
    assert crops.shape == (400, 2, 5, 5)
    top, left = crops[:, 0, 0, 0] // 10, crops[:, 0, 0, 0] % 10
    # offsets span [0, 8 - 5] inclusive at both ends (CURL's randint(0, crop_max) never
    # reaches crop_max; this one does)
    assert set(top.long().tolist()) == {0, 1, 2, 3}
    assert set(left.long().tolist()) == {0, 1, 2, 3}
    rows, cols = torch.arange(5)[:, None] * 10, torch.arange(5)[None, :]
    for b in range(0, 400, 37):
        window = 10 * top[b] + left[b] + rows + cols
        assert torch.equal(crops[b, 0], window)
        assert torch.equal(crops[b, 1], window + 1000)  # same box in the other channel


def test_random_crops_differ_per_sample_and_repeat_under_a_generator():
    images = _coordinate_images(16)
    a = random_crop(images, 5, torch.Generator().manual_seed(3))
    b = random_crop(images, 5, torch.Generator().manual_seed(3))
    c = random_crop(images, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({float(v) for v in a[:, 0, 0, 0]}) > 1  # windows differ across the batch
    u8 = random_crop(images.to(torch.uint8), 5, torch.Generator().manual_seed(3))
    assert u8.dtype == torch.uint8


def test_center_crop_offset():
    crops = center_crop(_coordinate_images(1), 5)
    # offset (8 - 5) // 2 = 1 on both axes
    assert crops[0, 0, 0, 0].item() == 11 and crops[0, 1, 4, 4].item() == 1055


# EMA -----------------------------------------------------------------------------------

def test_soft_update_by_hand():
    net, target = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0), net.bias.fill_(0.0)
        target.weight.fill_(3.0), target.bias.fill_(2.0)
    soft_update(net, target, 0.25)
    # 0.25 * 1 + 0.75 * 3 = 2.5;  0.25 * 0 + 0.75 * 2 = 1.5
    assert target.weight.item() == 2.5 and target.bias.item() == 1.5
    assert net.weight.item() == 1.0 and net.bias.item() == 0.0


# SAC -----------------------------------------------------------------------------------

def test_bounded_log_std():
    raw = torch.tensor([0.0, 50.0, -50.0])
    # -10 + 0.5 * 12 * (tanh(x) + 1): x = 0 -> -4; x -> +inf -> 2; x -> -inf -> -10
    assert torch.allclose(bounded_log_std(raw, -10.0, 2.0), torch.tensor([-4.0, 2.0, -10.0]))


def test_squashed_gaussian_log_prob_by_hand():
    mu = torch.tensor([[0.0, 0.5]])
    log_std = torch.tensor([[0.0, math.log(0.5)]])
    noise = torch.tensor([[1.0, -1.0]])
    action, log_prob = squashed_gaussian(mu, log_std, noise)
    # pre-tanh: 0 + 1 * 1 = 1;  0.5 + 0.5 * -1 = 0
    assert torch.allclose(action, torch.tensor([[math.tanh(1.0), 0.0]]))
    # Gaussian: (-1/2 - 0) + (-1/2 - log 0.5) - (2/2) log 2 pi
    gaussian = -0.5 + (-0.5 - math.log(0.5)) - math.log(2 * math.pi)
    # tanh correction: log(1 - tanh(1)^2 + 1e-6) + log(1 - 0 + 1e-6)
    correction = math.log(1 - math.tanh(1.0) ** 2 + 1e-6) + math.log(1 + 1e-6)
    assert log_prob.shape == (1, 1)
    assert log_prob.item() == pytest.approx(gaussian - correction, abs=1e-5)
    assert log_prob.item() == pytest.approx(-1.2771, abs=1e-4)


def test_actor_loss_by_hand_and_alpha_is_a_constant():
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    log_prob = torch.tensor([[-1.0], [3.0]], requires_grad=True)
    q = torch.tensor([[2.0], [1.0]])
    loss = actor_loss(log_prob, q, log_alpha.exp())
    # mean(0.5 * -1 - 2, 0.5 * 3 - 1) = mean(-2.5, 0.5) = -1
    assert loss.item() == pytest.approx(-1.0)
    loss.backward()
    assert log_alpha.grad is None
    assert torch.allclose(log_prob.grad, torch.tensor([[0.25], [0.25]]))  # alpha / B


def test_temperature_loss_by_hand_and_log_prob_is_a_constant():
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    log_prob = torch.tensor([[-1.0], [3.0]], requires_grad=True)
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-2.0)
    # -log pi - H = (1 + 2, -3 + 2) = (3, -1); mean 1; times alpha 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(0.5)  # d(alpha * 1)/d log alpha = alpha
    assert log_prob.grad is None


def test_critic_loss_by_hand():
    q1, q2 = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])
    target = torch.tensor([[1.0], [0.0]])
    # mean(0, 4) + mean(1, 0) = 2 + 0.5
    assert critic_loss(q1, q2, target).item() == 2.5


# Settings ------------------------------------------------------------------------------

def test_learning_rate_follows_curl_table_3_by_target_domain():
    from baselines.curl import CURL
    from coworld_bench.errors import ConfigError
    from coworld_bench.tasks import resolve_task

    def lr(target, **overrides):
        config = CURL.make_config("paper", overrides)
        return CURL.for_tasks(config, None, resolve_task(target)).lr

    assert lr("CR") == 2e-4 and lr("CD") == 2e-4  # "2e-4 cheetah, run"
    assert lr("WW") == 1e-3 and lr("DC") == 1e-3  # "1e-3 otherwise"
    assert lr("CR", lr="5e-4") == 5e-4
    with pytest.raises(ConfigError):
        lr("WW", log_std_min="3")


# Real updates on a real dataset ---------------------------------------------------------

def build(data_root, tmp_path, overrides=None):
    """CURL as the smoke run on WW builds it (real dataset on disk)."""
    from coworld_bench.data import Dataset, collect

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COWORLD_BENCH_DATA", str(data_root))
        run = prepare(RunRequest(algo="curl", target="WW", preset="smoke",
                                 overrides=overrides or {}, device="cpu", out=str(tmp_path),
                                 progress=False))
        if run.collect_config is not None:
            collect(run.collect_config, run.dataset_directory, progress=False)
        algo, _ = run.build(Dataset(run.dataset_directory))
    return algo


ACTOR_KEYS = {"actor/policy", "actor/entropy", "alpha/temperature", "alpha/value"}
EVERY_STEP = {"critic/td", "critic/q", "critic/target_q", "encoder+cpc/contrastive",
              "encoder/accuracy"}


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_updates_on_real_data(data_root, tmp_path):
    torch.manual_seed(0)
    algo = build(data_root, tmp_path)
    assert algo.config.lr == 1e-3  # walker: CURL Table 3's "1e-3 otherwise"
    assert algo.target_entropy == -6.0
    # The actor owns no conv layer: they are the critic's.
    assert not {id(p) for p in algo.actor.parameters()} & {id(p) for p in algo.critic.parameters()}
    key_encoder, W = _params(algo.critic_target.encoder), algo.W.detach().clone()
    metrics = algo.train_step(0)
    assert set(metrics) == EVERY_STEP | ACTOR_KEYS
    assert not _same(key_encoder, _params(algo.critic_target.encoder))  # EMA at step 0
    assert not torch.equal(W, algo.W)  # the contrastive loss trains W
    key_encoder, actor = _params(algo.critic_target.encoder), _params(algo.actor)
    metrics = {**metrics, **algo.train_step(1)}
    assert _same(key_encoder, _params(algo.critic_target.encoder))  # no EMA at odd steps
    assert _same(actor, _params(algo.actor))  # nor an actor update
    for step in (2, 3):
        metrics.update(algo.train_step(step))
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 0.0 <= metrics["encoder/accuracy"] <= 1.0

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    action, state = algo.policy({"image": image, "is_first": True}, None, deterministic=True)
    assert action.shape == (6,) and np.all(np.abs(action) <= 1)
    assert len(state) == algo.config.frame_stack
    value = algo.value({"image": image, "is_first": True}, state)
    assert math.isfinite(value)
    assert algo.value({"image": image, "is_first": True}, state) == value  # centre crop
    sampled, _ = algo.policy({"image": image, "is_first": True}, None, deterministic=False)
    assert not np.allclose(sampled, action)


def test_checkpoint_round_trip_resumes_identically(data_root, tmp_path):
    torch.manual_seed(0)
    algo = build(data_root, tmp_path)
    for step in range(2):
        algo.train_step(step)
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # another init: everything must come from the checkpoint
    other = build(data_root, tmp_path)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for step in (2, 3):
        assert algo.train_step(step) == other.train_step(step)


def test_updates_stay_finite_under_bfloat16(data_root, tmp_path):
    torch.manual_seed(0)
    algo = build(data_root, tmp_path)
    with torch.autocast(**BF16):
        assert torch.is_autocast_enabled("cpu")
        for step in range(4):
            metrics = algo.train_step(step)  # optimize() rejects non-float32 loss terms
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            assert not bad, f"step {step}: non-finite {bad}"
        image = np.zeros((64, 64, 3), np.uint8)
        _, state = algo.policy({"image": image, "is_first": True}, None)
        assert math.isfinite(algo.value({"image": image, "is_first": True}, state))
    for name, tensor in algo.state_dict()["critic"].items():
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), name


def test_contrastive_update_steps_the_encoder_twice_and_w_once(data_root, tmp_path):
    """CURL's update_cpc: one backward, then encoder_optimizer.step() (the encoder) and
    cpc_optimizer.step() (the encoder and W), two Adams with their own moments. On a
    first step Adam moves a weight by lr * g / (|g| + eps): lr * sign(g) where |g| is
    well above eps. So each encoder weight moves by 2 lr sign(g), W's by lr sign(g)."""
    torch.manual_seed(0)
    algo = build(data_root, tmp_path)
    lr, batch = algo.config.lr, algo.batch()
    encoder = [p.detach().clone() for p in algo.critic.encoder.parameters()]
    W = algo.W.detach().clone()
    algo.update(algo.contrastive_losses, batch)
    grads = [p.grad for p in algo.critic.encoder.parameters()]
    for before, p, g in zip(encoder, algo.critic.encoder.parameters(), grads):
        big = g.abs() > 1e-5
        step = (p.detach() - before)[big]
        torch.testing.assert_close(step, -2 * lr * g[big].sign(), rtol=1e-3, atol=lr * 1e-2)
    big = algo.W.grad.abs() > 1e-5
    assert big.any()
    torch.testing.assert_close((algo.W.detach() - W)[big], -lr * algo.W.grad[big].sign(),
                               rtol=1e-3, atol=lr * 1e-2)
    assert set(algo.optimizers) == {"critic", "actor", "alpha", "encoder", "cpc"}
