"""The one update rule (``baselines.core.optim.optimize``) against hand computations."""

import pytest
import torch
from torch import nn

from baselines.core.optim import Part, optimize


def test_optimize_steps_only_the_named_parts_and_checks_terms_against_scales():
    a, b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(1.0))
    opts = {"a": torch.optim.SGD([a], lr=0.5), "b": torch.optim.SGD([b], lr=0.5)}
    metrics, aux = optimize(opts, lambda: ({"a/x": (a * b) ** 2}, {"a/x": 2.0}, {"a/m": a * 3}))
    # d/da 2 (ab)^2 = 4 a b^2 = 4 -> a = 1 - 0.5 * 4 = -1; b gets a gradient but no step
    assert a.item() == -1.0 and b.item() == 1.0
    assert metrics["a/x"].item() == 1.0 and aux["a/m"].item() == 3.0
    assert "a/grad_norm" not in metrics  # a bare torch optimiser: no clip
    with pytest.raises(ValueError):
        optimize(opts, lambda: ({"a/x": a ** 2}, {"a/x": 1.0, "a/y": 1.0}, {}))
    with pytest.raises(ValueError):
        optimize(opts, lambda: ({"c/x": a ** 2}, {"c/x": 1.0}, {}))
    with pytest.raises(TypeError):
        optimize(opts, lambda: ({"a/x": (a ** 2).double()}, {"a/x": 1.0}, {}))


def test_a_term_of_several_parts_steps_each_and_a_clipped_part_reports_its_norm():
    """``a+b/x`` trains both parts (a loss through a shared trunk); a Part with a clip
    scales its gradient to the clip norm and reports the norm before clipping."""
    a, b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(2.0))
    opts = {"a": torch.optim.SGD([a], lr=0.5),
            "b": Part([b], torch.optim.SGD([b], lr=0.5), clip=1.0)}
    metrics, _ = optimize(opts, lambda: ({"a+b/x": a * b ** 2}, {"a+b/x": 1.0}, None))
    # da = b^2 = 4 -> a = 1 - 2 = -1; db = 2ab = 4, clipped to 1 -> b = 2 - 0.5 = 1.5
    assert a.item() == -1.0 and b.item() == pytest.approx(1.5, abs=1e-6)  # clip / (norm + 1e-6)
    assert metrics["b/grad_norm"].item() == pytest.approx(4.0)
