"""The U-Net and its parts: shapes, what each part computes, and that the diffusion code runs on it unchanged."""

import pytest
import torch
from torch.nn import functional as F

import diffusion_lib as dl
from diffusion_lib.unet import (
    BLOCKS,
    ConvNextBlock,
    Downsample,
    ResnetBlock,
    SelfAttention,
    TimeEmbedding,
    UNet,
    Upsample,
)

EMB = 16


def test_time_embedding_shape_and_dependence_on_t():
    torch.manual_seed(0)
    emb = TimeEmbedding(8, EMB)(torch.tensor([1, 2, 1000]))
    assert emb.shape == (3, EMB)
    assert not torch.allclose(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])


@pytest.mark.parametrize("scale_shift", [False, True])
@pytest.mark.parametrize("in_ch, out_ch", [(8, 8), (8, 16)])
def test_resnet_block_shapes_and_time_conditioning(in_ch, out_ch, scale_shift):
    torch.manual_seed(0)
    block = ResnetBlock(in_ch, out_ch, EMB, groups=4, scale_shift=scale_shift)
    x, e1, e2 = torch.randn(2, in_ch, 8, 8), torch.randn(2, EMB), torch.randn(2, EMB)
    y = block(x, e1)
    assert y.shape == (2, out_ch, 8, 8)
    assert not torch.allclose(y, block(x, e2))  # the time embedding reaches the output


def test_scale_shift_is_adaptive_group_norm():
    # with conv2 the identity and no skip change, the block's inner map is AdaGN: (1 + s) GN(h) + b
    torch.manual_seed(0)
    block = ResnetBlock(4, 4, EMB, groups=2, scale_shift=True)
    x, e = torch.randn(3, 4, 8, 8), torch.randn(3, EMB)
    h = block.conv1(F.silu(block.norm1(x)))
    scale, shift = block.emb(F.silu(e)).chunk(2, dim=1)
    expected = block.norm2(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    expected = x + block.conv2(F.silu(expected))
    assert torch.allclose(block(x, e), expected, atol=1e-6)


@pytest.mark.parametrize("in_ch, out_ch", [(8, 8), (8, 16)])
def test_convnext_block_shapes_and_time_conditioning(in_ch, out_ch):
    torch.manual_seed(0)
    block = ConvNextBlock(in_ch, out_ch, EMB)
    x = torch.randn(2, in_ch, 4, 4)
    y = block(x, torch.randn(2, EMB))
    assert y.shape == (2, out_ch, 4, 4) and not torch.allclose(y, block(x, torch.randn(2, EMB)))


def test_self_attention_matches_a_direct_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(8, heads=2, groups=4)
    x = torch.randn(2, 8, 2, 2)
    qkv = attn.qkv(attn.norm(x)).reshape(2, 3, 2, 4, 4)  # (B, qkv, heads, C / heads, H W)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    weights = torch.softmax(q.transpose(-1, -2) @ k / 4 ** 0.5, dim=-1)  # (B, heads, HW, HW)
    h = (weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, 8, 2, 2)
    assert torch.allclose(attn(x), x + attn.out(h), atol=1e-5)


def test_self_attention_needs_heads_to_divide_channels():
    with pytest.raises(ValueError, match="divisible by heads"):
        SelfAttention(6, heads=4)


def test_down_and_up_sampling_shapes():
    x = torch.randn(2, 8, 8, 8)
    assert Downsample(8)(x).shape == (2, 8, 4, 4)
    assert Upsample(8)(x).shape == (2, 8, 16, 16)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("learn_var", [False, True])
def test_unet_shapes(block, attention, learn_var):
    torch.manual_seed(0)
    model = UNet(width=8, block=block, attention=attention, learn_var=learn_var)
    with torch.no_grad():
        out = model(torch.randn(3, 1, 8, 8), torch.tensor([1, 500, 1000]))
    if learn_var:
        pred, v = out
        assert pred.shape == v.shape == (3, 1, 8, 8) and 0 < float(v.min()) and float(v.max()) < 1
    else:
        assert out.shape == (3, 1, 8, 8)


def test_unet_skip_connections_carry_fine_detail():
    # a pixel's change reaches the output at that pixel (through the 8x8 skip), not only via 2x2
    torch.manual_seed(0)
    model = UNet(width=8)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    model(x, torch.tensor([10]))[0, 0, 3, 5].backward()
    assert x.grad[0, 0, 3, 5].abs() > 0


def test_unet_refuses_a_wrong_shape_and_bad_settings():
    model = UNet(width=8)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) with H, W divisible by 4"):
        model(torch.randn(2, 64), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) with H, W divisible by 4"):
        model(torch.randn(2, 1, 6, 6), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unknown block"):
        UNet(block="transformer")
    with pytest.raises(ValueError, match="must be positive"):
        UNet(width=0)


def test_the_diffusion_code_runs_unchanged_on_images():
    # the losses, the sampler and the bound see only tensors of shape (B, 1, 8, 8)
    torch.manual_seed(0)
    sched = dl.make_schedule("cosine", 20)
    model = UNet(width=8, learn_var=True)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t, eps = torch.tensor([1, 5, 10, 20]), torch.randn(4, 1, 8, 8)
    for loss in dl.LOSSES:
        losses, _ = dl.training_losses(sched, model, x0, t, eps, loss, var="learned")
        assert losses.shape == (4,) and torch.isfinite(losses).all()
    x = dl.sample(sched, model, 3, var="learned", data_shape=(1, 8, 8),
                  generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    q = torch.round((x0 + 1) * 8) / 8 - 1  # on the 17 levels
    terms = dl.bound_terms(sched, model, q, var="learned", decoder="discretized", levels=17)
    assert terms.steps.shape == (20, 4) and torch.isfinite(terms.total).all()


def test_image_tiles_and_plots():
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = torch.arange(5 * 64, dtype=torch.float64).reshape(5, 1, 8, 8)
    canvas = dl.plotting.tile_images(images, ncols=3)
    assert canvas.shape == (2 * 8 + 1, 3 * 8 + 2)
    assert torch.equal(canvas[9:17, 9:17], images[4, 0])  # row 1, column 1 is the 5th image
    assert math.isnan(float(canvas[8, 0])) and canvas[9:, 18:].isnan().all()  # gap row; empty 6th tile
    ax = dl.plotting.plot_image_grid(images, ncols=3, title="grid")
    assert ax.get_title() == "grid" and ax.images[0].get_array().shape == canvas.shape
    fig = dl.plotting.plot_image_strip({"t = 1": images[:2], "t = 2": images[2:4]}, suptitle="strip")
    assert [a.get_title() for a in fig.axes] == ["t = 1", "t = 2"]
    plt.close("all")


def test_fourier_inputs_repeat_with_the_level_gap_and_reach_the_network():
    from diffusion_lib.unet import fourier_inputs

    x = torch.linspace(-1, 1, 17, dtype=torch.float64).reshape(1, 1, 1, 17)  # the 17 digit levels, gap 1/8
    features = fourier_inputs(x, (3, 4))
    assert features.shape == (1, 5, 1, 17) and torch.equal(features[:, :1], x)
    # n = 4 has the period of the gap: every level gives the same sin and cos; n = 3 alternates over two levels
    assert torch.allclose(features[:, 2], features[:, 2, :, :1].expand(1, 1, 17), atol=1e-12)
    assert torch.allclose(features[:, 4], torch.ones(1, 1, 17, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(features[:, 3, :, ::2], torch.ones(1, 1, 9, dtype=torch.float64), atol=1e-12)
    # between two levels the n = 4 features differ from their value at the levels: x_t's offset is visible
    half = fourier_inputs(x[..., :1] + 1 / 16, (4,))
    assert float(half[0, 2, 0, 0]) == pytest.approx(-1.0)
    net = dl.UNet(1, width=8, fourier_features=(3, 4))
    assert net.stem.in_channels == 5 and net(torch.zeros(2, 1, 8, 8), torch.tensor([1, 5])).shape == (2, 1, 8, 8)
    assert torch.equal(fourier_inputs(x, ()), x)
