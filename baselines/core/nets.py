"""Networks and augmentations used by more than one algorithm: the MLP of every head
(DreamerV2's and DrQ-v2's) and its ELU, and the pixel pieces of the model-free
baselines (DrQ-v2's encoder, frame stacking, random shifts)."""

from __future__ import annotations

import torch
from torch import nn


def float32_cpu(x: torch.Tensor) -> bool:
    """Whether the CPU float32 kernels of this package apply (elsewhere the stock ops
    run)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


class _ELUFunction(torch.autograd.Function):
    """ELU as max(x, exp(min(x, 0)) - 1): for x > 0 the second term is 0, for x <= 0
    exp(x) - 1 >= x. Four passes of cheap kernels run ~1.7x faster on a CPU than
    torch's ELU, whose expm1 dominates (a (256, 16, 31, 31) tensor: 4.8 -> 2.8 ms); the
    result differs from expm1's by at most 6e-8 (float32 rounding of exp(x) - 1 near 0).
    The gradient is torch's own ELU backward from the result (no second exp)."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(max=0)
        out.exp_().sub_(1)
        out = torch.maximum(x, out, out=out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


class ELU(nn.ELU):
    """ELU: the kernel above on CPU float32 tensors of at least ``min_size`` elements,
    torch's elsewhere (bf16 keeps expm1's accuracy near 0; on small tensors four
    kernel launches cost more than they save). Forward and backward of a dense layer's
    activations (scratch timing, 2 threads): (16, 128) 54 -> 110 us, hence stock;
    (256, 128) 170 -> 159 us; (4096, 128) 1046 -> 602 us. At the authors' CoWorld size
    the heads' ELUs took ~0.33 s of a 3.9 s source step."""

    min_size = 32_768

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float32_cpu(x) and x.numel() >= self.min_size:
            return _ELUFunction.apply(x)
        return super().forward(x)


class DrQEncoder(nn.Module):
    """DrQ-v2's pixel encoder (V-D4RL): 4 conv layers of 32 3x3 filters, strides
    2, 1, 1, 1, ReLU; input uint8 in [0, 255] scaled to [-0.5, 0.5]."""

    def __init__(self, in_channels: int, image_size: int = 64):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            self.out_dim = self.convs(torch.zeros(1, in_channels, image_size, image_size)).shape[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.convs(images.float() / 255.0 - 0.5)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """DrQ's augmentation: replicate-pad by ``pad`` pixels, crop back at a random integer
    offset per sample. ``images``: (B, C, H, W)."""
    b, _, h, w = images.shape
    padded = nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).to(images.dtype)


def mlp(in_dim: int, units: int, layers: int, out_dim: int, act=ELU, norm: bool = False
        ) -> nn.Sequential:
    """``layers`` dense layers of ``units`` with activation ``act`` (LayerNorm before it
    with ``norm``: DreamerV2's ``norm: layer``), then a linear output. DreamerV2's
    heads: ELU, no norm by default; DrQ-v2's: ReLU."""
    mods, d = [], in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, units), *([nn.LayerNorm(units)] if norm else []), act()]
        d = units
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class FrameStack:
    """The last ``k`` frames as one channels-first array, as the transition sampler
    stacks them (the reset frame repeated at an episode's start)."""

    @staticmethod
    def update(state, image, k: int, is_first: bool):
        import numpy as np

        frame = np.ascontiguousarray(image.transpose(2, 0, 1))
        if state is None or is_first:
            return [frame] * k
        return [*state[1:], frame]


@torch.no_grad()
def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging of a target network: target <- tau * net + (1 - tau) * target,
    parameter by parameter."""
    for p, t in zip(net.parameters(), target.parameters()):
        t.lerp_(p, tau)


def adam(params, lr: float, weight_decay: float = 0.0, **kwargs) -> torch.optim.Optimizer:
    """Adam (AdamW with ``weight_decay``), fused: one kernel per step for all the
    parameters, on a CPU as on a GPU, with its step counts on the device, so a step
    never reads a number back to the host (the for-loop Adam does, per parameter)."""
    if weight_decay:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
    return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
