"""Shared augmentation and the BC loss against hand-computed values."""

import torch

from baselines.bc import bc_loss
from baselines.core.nets import DrQEncoder, FrameStack, random_shift


def test_bc_loss_by_hand():
    predicted = torch.tensor([[0.5, -1.0], [0.0, 0.25]])
    actions = torch.tensor([[0.0, -0.5], [1.0, 0.25]])
    # squared errors 0.25, 0.25, 1.0, 0 -> mean 0.375
    assert bc_loss(predicted, actions).item() == 0.375


def test_random_shift_is_a_crop_of_the_replicate_padded_image():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 3, (2, 2), generator=torch.Generator().manual_seed(0))
    out = random_shift(images, pad=1, generator=gen)
    padded = torch.nn.functional.pad(images.float(), (1, 1, 1, 1), mode="replicate")
    for b in range(2):
        dy, dx = offsets[b].tolist()
        assert torch.equal(out[b], padded[b, :, dy:dy + 4, dx:dx + 4].to(torch.uint8))
    assert out.dtype == torch.uint8


def test_drq_encoder_geometry():
    enc = DrQEncoder(in_channels=9, image_size=64)
    # 64 -> 31 (stride 2) -> 29 -> 27 -> 25, 32 channels
    assert enc.out_dim == 32 * 25 * 25
    assert enc(torch.zeros(2, 9, 64, 64, dtype=torch.uint8)).shape == (2, 32 * 25 * 25)


def test_frame_stack_repeats_the_first_frame():
    import numpy as np

    a, b = np.zeros((64, 64, 3), np.uint8), np.ones((64, 64, 3), np.uint8)
    state = FrameStack.update(None, a, 3, True)
    assert len(state) == 3 and all((f == 0).all() for f in state)
    state = FrameStack.update(state, b, 3, False)
    assert [int(f.max()) for f in state] == [0, 0, 1] and state[0].shape == (3, 64, 64)
