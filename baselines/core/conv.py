"""The image encoder and decoder of the world model (DreamerV2's conv stacks), with
the CPU kernels that make them fast: an ELU for feature maps and stride-2 transposed
convolutions computed as sub-pixel convolutions (custom autograd functions)."""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from baselines.core.nets import ELU, float32_cpu

Losses = dict[str, torch.Tensor]
Scales = dict[str, float]


# Networks --------------------------------------------------------------------------

class ConvELU(ELU):
    """ELU for the image encoder's and decoder's feature maps: the CPU float32 kernel
    of ``baselines.core.nets.ELU`` at every size (the maps are always large)."""

    min_size = 0


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight of a stride-2 transposed conv, (in, out, k, k), as that of a stride-1
    conv with kernel ceil(k / 2) and 4 x out channels (row parity, column parity, out),
    whose outputs, interleaved, are the transposed conv's: output row 2p + a gathers
    input rows p - t with kernel rows a + 2t, t < ceil(k / 2). Odd k is padded with a
    zero tap."""
    c_in, c_out, k, _ = weight.shape
    if k % 2:
        weight = F.pad(weight, (0, 1, 0, 1))
    taps = (k + 1) // 2
    weight = weight.reshape(c_in, c_out, taps, 2, taps, 2).flip(2, 4)  # tap t -> taps-1-t
    return weight.permute(3, 5, 1, 0, 2, 4).reshape(4 * c_out, c_in, taps, taps)


class _SubpixelTransposedConv(torch.autograd.Function):
    """A stride-2 transposed conv computed forward as a stride-1 conv (``subpixel_weight``)
    and a pixel interleave, with torch's transposed-conv backward. On a CPU oneDNN's
    transposed-conv forward is slow where outputs have few channels: the decoder's
    last layer (16 -> 3, 30 -> 64, batch 256) takes 27 ms forward, its conv form 9 ms,
    and the backward (4.8 + 7.9 ms) is already a plain conv."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        c_out, k = weight.shape[1], weight.shape[-1]
        pad = (k + 1) // 2 - 1
        y = F.conv2d(F.pad(x, (pad, pad, pad, pad)), subpixel_weight(weight), bias.repeat(4))
        n, _, h, w = y.shape
        y = (y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, c_out).transpose(2, 3)
             .reshape(n, 2 * h, 2 * w, c_out).permute(0, 3, 1, 2))  # channels-last
        if k % 2:
            y = y[:, :, :-1, :-1]
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[1]], [2, 2], [0, 0], [1, 1], True, [0, 0], 1,
            list(ctx.needs_input_grad))


class StrideTwoTransposedConv(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d(in, out, k, 2)`` (same parameters and state dict), run in
    its conv form on CPU float32 (``_SubpixelTransposedConv``) where that is faster,
    stock elsewhere."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(c_in, c_out, kernel, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float32_cpu(x):
            return _SubpixelTransposedConv.apply(x, self.weight, self.bias)
        return super().forward(x)


class ConvEncoder(nn.Module):
    """DreamerV2's 64x64 encoder: 4 convs, kernel 4, stride 2, depth x (1, 2, 4, 8)."""

    def __init__(self, depth: int):
        super().__init__()
        layers, c = [], 3
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, depth * mult, 4, 2), ConvELU()]
            c = depth * mult
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = depth * 8 * 2 * 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 64, 64, 3) -> (..., out_dim)."""
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """DreamerV2's 64x64 decoder: linear, 4 transposed convs (kernels 5, 5, 6, 6)."""

    def __init__(self, feat_dim: int, depth: int):
        super().__init__()
        self.depth = depth
        self.linear = nn.Linear(feat_dim, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, 5, 2), ConvELU(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, 5, 2), ConvELU(),
            nn.ConvTranspose2d(2 * depth, depth, 6, 2), ConvELU(),
            StrideTwoTransposedConv(depth, 3, 6))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., feat) -> image mean (..., 64, 64, 3) in [-0.5, 0.5] units, float32."""
        lead = feat.shape[:-1]
        x = self.linear(feat.reshape(-1, feat.shape[-1]))
        # The first transposed conv sees a 1x1 input, so it is a matrix product: each
        # input channel adds its weight's (out, k, k) block, scaled. Run as one (a conv
        # kernel is ~10x slower at this shape), with the weights ordered (k, k, out) so
        # that the result is channels-last, the layout the other convs run fastest in
        # (and the NHWC image the loss wants is then a view).
        first = self.net[0]
        c_in, c_out, k, _ = first.weight.shape
        weight = first.weight.permute(0, 2, 3, 1).reshape(c_in, k * k * c_out)
        h = torch.addmm(first.bias.repeat(k * k), x, weight)
        h = h.reshape(-1, k, k, c_out).permute(0, 3, 1, 2)
        return self.net[1:](h).permute(0, 2, 3, 1).reshape(*lead, 64, 64, 3).float()


