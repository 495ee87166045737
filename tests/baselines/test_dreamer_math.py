"""DreamerV2 pieces against hand-computed values."""

import math

import pytest
import torch
from torch import nn

from baselines.core.losses import (
    categorical_kl, diagonal_fisher, ensemble_disagreement, ewc_penalty, gaussian_kl, vmap_diagonal_fisher, kl_balance_loss, lambda_return,
)
from baselines.core.world_model import categorical_sample


def test_lambda_return_by_hand():
    # H = 2, one trajectory. r1 = 1, r2 = 2; v(s0..s2) = 10, 20, 30; gamma_t = 0.5; lam = 0.5.
    reward = torch.tensor([[1.0], [2.0]])
    value = torch.tensor([[10.0], [20.0], [30.0]])
    discount = torch.tensor([[0.5], [0.5]])
    out = lambda_return(reward, value, discount, lam=0.5)
    # R_1 = r2 + 0.5 * (0.5 * v2 + 0.5 * R_2), R_2 = v2 = 30 -> 2 + 0.5 * 30 = 17
    # R_0 = r1 + 0.5 * (0.5 * v1 + 0.5 * R_1) = 1 + 0.5 * (10 + 8.5) = 10.25
    assert out[:, 0].tolist() == [10.25, 17.0]


def test_lambda_return_limits():
    reward = torch.tensor([[1.0], [1.0], [1.0]])
    value = torch.tensor([[0.0], [5.0], [5.0], [5.0]])
    discount = torch.full((3, 1), 0.9)
    # lam = 0: one-step TD targets r + gamma v(s_{t+1}).
    assert torch.allclose(lambda_return(reward, value, discount, 0.0)[:, 0],
                          torch.tensor([1 + 0.9 * 5] * 3))
    # lam = 1: Monte Carlo with bootstrap v(s_H): 1 + .9 + .81 + .729 * 5.
    assert lambda_return(reward, value, discount, 1.0)[0, 0].item() == pytest.approx(
        1 + 0.9 + 0.81 + 0.729 * 5)


def test_categorical_sample_inverts_the_cumulative_distribution():
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3])  # cumulative 0.2, 0.2, 0.7, 1.0
    torch.manual_seed(0)
    uniform = torch.rand(1)
    torch.manual_seed(0)
    index = categorical_sample(probs).item()
    # By hand: the class whose cumulative interval holds the draw.
    u = uniform.item()
    assert index == (0 if u < 0.2 else 2 if u < 0.7 else 3)
    # Frequencies over many rows match the probabilities; a class of probability 0 is
    # never drawn; a last cumulative value rounded below 1 cannot give an index past the end.
    draws = categorical_sample(probs.expand(200_000, 4))
    counts = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert counts[1] == 0
    assert torch.allclose(counts, probs.double(), atol=0.005)
    short = torch.tensor([[0.5, 0.4999]]).expand(10_000, 2)
    assert categorical_sample(short).max() == 1
    # Batched (..., stoch, classes) like the posterior's.
    assert categorical_sample(torch.full((3, 5, 16, 16), 1 / 16)).shape == (3, 5, 16)


def test_categorical_kl_by_hand():
    p = torch.log(torch.tensor([[[0.5, 0.5]]]))
    q = torch.log(torch.tensor([[[0.25, 0.75]]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert categorical_kl(p, q).item() == pytest.approx(expected, rel=1e-6)
    # Summed over independent variables.
    two = categorical_kl(p.expand(1, 2, 2), q.expand(1, 2, 2))
    assert two.item() == pytest.approx(2 * expected, rel=1e-6)


def test_gaussian_kl_by_hand():
    # KL(N(1, 1) || N(0, 2^2)) = log 2 + (1 + 1) / 8 - 1/2
    value = gaussian_kl(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.0]),
                        torch.tensor([2.0]))
    assert value.item() == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-6)


def _categorical_kl_fn(p, q):
    return categorical_kl(p["logits"], q["logits"])


def test_kl_balance_and_free_nats_by_hand():
    post = {"logits": torch.log(torch.tensor([[[0.5, 0.5]]])).requires_grad_()}
    prior = {"logits": torch.log(torch.tensor([[[0.25, 0.75]]])).requires_grad_()}
    kl = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)  # = 0.1438
    # Below the free nats: both terms are clipped to `free`, no gradient.
    loss, value = kl_balance_loss(_categorical_kl_fn, post, prior, balance=0.8, free=1.0)
    assert loss.item() == pytest.approx(1.0) and value.item() == pytest.approx(kl)
    loss.backward()
    assert post["logits"].grad is None or torch.all(post["logits"].grad == 0)
    # Above: loss = kl; the prior gets 0.8 of the gradient, the posterior 0.2.
    post["logits"].grad = prior["logits"].grad = None
    loss, _ = kl_balance_loss(_categorical_kl_fn, post, prior, balance=0.8, free=0.0)
    assert loss.item() == pytest.approx(kl)
    loss.backward()
    full_post = torch.autograd.grad(_categorical_kl_fn(
        {"logits": post["logits"]}, {"logits": prior["logits"].detach()}).sum(), post["logits"])[0]
    full_prior = torch.autograd.grad(_categorical_kl_fn(
        {"logits": post["logits"].detach()}, {"logits": prior["logits"]}).sum(), prior["logits"])[0]
    assert torch.allclose(post["logits"].grad, 0.2 * full_post)
    assert torch.allclose(prior["logits"].grad, 0.8 * full_prior)


def test_ensemble_disagreement_by_hand():
    # Two heads, one variable of two classes: [1, 0] and [0, 1]; mean [.5, .5];
    # each head's Frobenius distance to the mean = sqrt(.25 + .25) = 0.7071.
    probs = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # (K=2, N=1, S=1, C=2)
    assert ensemble_disagreement(probs).item() == pytest.approx(math.sqrt(0.5))
    same = torch.tensor([[[[0.3, 0.7]]], [[[0.3, 0.7]]]])
    assert ensemble_disagreement(same).item() == 0.0


def test_ewc_penalty_by_hand():
    params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    anchors = {"w": torch.tensor([0.0, 2.0]), "b": torch.tensor([1.5])}
    fisher = {"w": torch.tensor([3.0, 100.0]), "b": torch.tensor([2.0])}
    # lam/2 * (3 * 1 + 100 * 0 + 2 * 1) = 0.5 * 10 * 5 = 25
    assert ewc_penalty(params, anchors, fisher, lam=10.0).item() == pytest.approx(25.0)


def test_diagonal_fisher_on_a_tiny_model():
    # NLL of y under N(w x, 1): 1/2 (w x - y)^2 -> grad_w = (w x - y) x.
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    x, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [0.0]])
    # per-sample gradients 1 and 18: F = (1 + 324) / 2; the batch-mean gradient's square
    # would be ((1 + 18) / 2)^2 = 90.25.
    losses = (0.5 * (model(x[i]) - y[i]) ** 2 for i in range(2))
    fisher = diagonal_fisher(dict(model.named_parameters()), (loss.sum() for loss in losses))
    assert fisher["weight"].item() == pytest.approx((1 ** 2 + 18 ** 2) / 2)
    by_vmap = vmap_diagonal_fisher(model, lambda forward, xi, yi: 0.5 * (forward(xi) - yi).pow(2).sum(),
                                   [(x[:1], y[:1]), (x[1:], y[1:])])
    assert by_vmap["weight"].item() == pytest.approx((1 ** 2 + 18 ** 2) / 2)


def test_decoder_first_layer_matrix_product_equals_its_transposed_conv():
    """ConvDecoder runs its first transposed conv (on a 1x1 input) as one matrix
    product with channels-last output; the image must be the one the plain module stack
    gives, in float32 and under CPU bfloat16 autocast, and so must the gradients."""
    from baselines.core.conv import ConvDecoder

    torch.manual_seed(0)
    decoder = ConvDecoder(24, 4)
    feat = torch.randn(3, 5, 24)

    def stacked(f):
        x = decoder.linear(f.reshape(-1, 24))[:, :, None, None]
        return decoder.net(x).permute(0, 2, 3, 1).reshape(3, 5, 64, 64, 3).float()

    out = decoder(feat)
    assert out.shape == (3, 5, 64, 64, 3)
    torch.testing.assert_close(out, stacked(feat), rtol=1e-5, atol=1e-6)
    grads = []
    for fn in (decoder, stacked):
        decoder.zero_grad()
        fn(feat).square().sum().backward()
        grads.append([p.grad.clone() for p in decoder.parameters()])
    for fast, plain in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(decoder(feat), stacked(feat), rtol=0.05, atol=0.02)


def test_conv_elu_by_hand_and_stock_where_it_must_be():
    """The encoder's and decoder's ELU (max(x, exp(min(x, 0)) - 1) on CPU float32):
    values and gradients by hand, torch's ELU kept under autocast."""
    from baselines.core.conv import ConvELU

    x = torch.tensor([-2.0, -1e-3, 0.0, 0.5, 3.0, -math.inf, math.inf], requires_grad=True)
    y = ConvELU()(x)
    assert type(y.grad_fn).__name__ == "_ELUFunctionBackward"  # the CPU float32 kernel ran
    expected = [math.expm1(-2.0), math.expm1(-1e-3), 0.0, 0.5, 3.0, -1.0, math.inf]
    torch.testing.assert_close(y.detach(), torch.tensor(expected), rtol=0, atol=1e-7)
    y[:5].sum().backward()
    # d/dx: exp(x) for x <= 0, 1 above.
    torch.testing.assert_close(x.grad[:5], torch.tensor([math.exp(-2.0), math.exp(-1e-3), 1.0, 1.0, 1.0]),
                               rtol=0, atol=1e-7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(ConvELU()(x).grad_fn).__name__ == "EluBackward0"
    assert ConvELU()(x.detach().double()).dtype == torch.float64  # stock elsewhere


def test_dense_elu_takes_the_cpu_kernel_only_on_large_tensors():
    """The heads' ELU (baselines.core.nets.ELU): the CPU float32 kernel from ``min_size``
    elements up, torch's below; the same values and gradients either way."""
    from baselines.core.nets import ELU, mlp

    torch.manual_seed(0)
    assert isinstance(mlp(4, 8, 1, 2)[1], ELU)
    for rows, kernel in ((16, "EluBackward0"), (256, "_ELUFunctionBackward")):
        x = (3 * torch.randn(rows, 128)).requires_grad_()
        y = ELU()(x)
        assert type(y.grad_fn).__name__ == kernel
        grad = torch.randn_like(y)
        y.backward(grad)
        x_ref = x.detach().clone().requires_grad_()
        y_ref = torch.nn.functional.elu(x_ref)
        y_ref.backward(grad)
        torch.testing.assert_close(y.detach(), y_ref.detach(), rtol=0, atol=1e-7)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-7)


def test_subpixel_transposed_conv_by_hand_and_against_torch():
    """A stride-2 transposed conv run as a conv and a pixel interleave: a 1-channel
    case by hand, then outputs and all three gradients against nn.ConvTranspose2d for
    the decoder's kernels (5: odd, padded with a zero tap; 6)."""
    from baselines.core.conv import StrideTwoTransposedConv, subpixel_weight

    conv = StrideTwoTransposedConv(1, 1, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
        conv.bias.zero_()
    # Output (a, 2j + b) = x[j] * w[a, b] for x = [1, 2].
    out = conv(torch.tensor([[[[1.0, 2.0]]]]))
    assert out.tolist() == [[[[1.0, 2.0, 2.0, 4.0], [3.0, 4.0, 6.0, 8.0]]]]
    assert subpixel_weight(torch.randn(4, 3, 6, 6)).shape == (12, 4, 3, 3)

    torch.manual_seed(0)
    for kernel, size in ((5, 5), (6, 13)):
        fast = StrideTwoTransposedConv(6, 3, kernel)
        stock = nn.ConvTranspose2d(6, 3, kernel, 2)
        stock.load_state_dict(fast.state_dict())  # same parameters, same state dict
        x = torch.randn(4, 6, size, size).contiguous(memory_format=torch.channels_last)
        results = []
        for module in (fast, stock):
            xi = x.clone().requires_grad_()
            y = module(xi)
            y.backward(torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape).sin())
            results.append([y.detach(), xi.grad, module.weight.grad, module.bias.grad])
        assert results[0][0].shape == (4, 3, 2 * size + kernel - 2, 2 * size + kernel - 2)
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
