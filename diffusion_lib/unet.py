"""A small U-Net for (B, C, H, W) images, from the parts the DDPM literature uses.

Contents: `BLOCKS`, `TimeEmbedding`, `ResnetBlock`, `ConvNextBlock`, `SelfAttention`, `Downsample`,
`Upsample`, `fourier_inputs`, `UNet`.

It is a `model(xt, t)` callable like `models.MLP` (see `reverse.model_step`): the same schedules, losses,
sampler and bound work on it unchanged. With num_classes it also takes a class label, `model(xt, t, label)`
(`guidance.guided` fixes the label for the sampler); a missing label is the null label. The parts:
  - `TimeEmbedding`: the sinusoidal embedding of t [Ho20, Sec. 4; Va17] and an MLP.
  - `ResnetBlock`: GroupNorm, SiLU, 3x3 conv twice, a residual path; the time embedding is added to
    the feature map [Ho20, App. B], or with scale_shift it sets a per-channel scale and shift after the
    second GroupNorm: AdaGN(h, e) = (1 + scale(e)) GroupNorm(h) + shift(e) [ND21, Sec. 3; DN21, Sec. 3.2].
  - `ConvNextBlock`: a 7x7 depthwise conv, the time embedding added, a one-group norm and an inverted
    bottleneck of 3x3 convs with GELU [Liu22], as in the Annotated Diffusion Model.
  - the class label (with num_classes): an embedding of num_classes + 1 rows, the last one the null label,
    added to the time embedding [HS22, Sec. 3.2]; zero-initialised, so training starts unconditional.
  - `SelfAttention`: multi-head attention over the pixels of the lowest resolution [Ho20, App. B].
  - `Downsample` (3x3 conv, stride 2) and `Upsample` (nearest x2, 3x3 conv); skip connections from
    every down block to the up block at the same resolution [Ro15].
References: [Ro15] Ronneberger et al., U-Net; [Liu22] Liu et al., A ConvNet for the 2020s; [DN21] Dhariwal
& Nichol, Diffusion models beat GANs. Shapes: x (B, C, H, W), t (B,) int64, H and W divisible by
2^(len(mults) - 1).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .models import timestep_embedding
from .reverse import interpolation_from_raw, zero_variance_head_

BLOCKS = ("resnet", "convnext")


def _groups(channels, groups):
    """The largest divisor of channels that is <= groups (GroupNorm needs one)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, emb_dim): the sinusoidal embedding of size `dim`, then Linear, SiLU, Linear."""

    def __init__(self, dim, emb_dim):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.dim))


class ResnetBlock(nn.Module):
    """(B, in_ch, H, W), emb (B, emb_dim) -> (B, out_ch, H, W); time by addition or scale-shift (AdaGN)."""

    def __init__(self, in_ch, out_ch, emb_dim, groups=8, scale_shift=False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch * (2 if scale_shift else 1))
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        return self.skip(x) + self.conv2(F.silu(h))


class ConvNextBlock(nn.Module):
    """(B, in_ch, H, W), emb (B, emb_dim) -> (B, out_ch, H, W): depthwise 7x7, + time, norm, bottleneck."""

    def __init__(self, in_ch, out_ch, emb_dim, mult=2):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 7, padding=3, groups=in_ch)
        self.emb = nn.Linear(emb_dim, in_ch)
        self.net = nn.Sequential(
            nn.GroupNorm(1, in_ch),
            nn.Conv2d(in_ch, out_ch * mult, 3, padding=1),
            nn.GELU(),
            nn.GroupNorm(1, out_ch * mult),
            nn.Conv2d(out_ch * mult, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.depthwise(x) + self.emb(F.gelu(emb))[:, :, None, None]
        return self.skip(x) + self.net(h)


class SelfAttention(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): GroupNorm, multi-head attention over the H W pixels, residual."""

    def __init__(self, channels, heads=4, groups=8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        # (B, 3C, H, W) -> three (B, heads, H W, C / heads)
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, H / 2, W / 2) by a strided 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C, 2 H, 2 W): nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def fourier_inputs(x, exponents):
    """x (B, C, H, W) with sin(2^n pi x) and cos(2^n pi x) for each n in exponents: (B, C (1 + 2 K), H, W).

    [Kingma21]: at high SNR x_t is x_0 plus noise far below the gap between pixel levels, and the
    likelihood rewards a network that tells the exact level; a smooth network of x_t barely can, but these
    features repeat with period 2^(1 - n), so with the gap 2^(1 - n) (n = 4 for the digits' gap of 1/8) they
    expose where x_t sits between two levels. No exponents: x unchanged.
    """
    if not exponents:
        return x
    angles = torch.cat([x * (2.0 ** n * math.pi) for n in exponents], dim=1)
    return torch.cat([x, angles.sin(), angles.cos()], dim=1)


class UNet(nn.Module):
    """The noise-prediction network for images: (x_t (B, C, H, W), t (B,)) -> prediction (B, C, H, W).

    Down path: at each resolution a block (width * mults[i] channels) whose output is kept for the skip,
    then Downsample (except at the last level). Middle: block, SelfAttention (if attention), block, at
    the lowest resolution. Up path: at each resolution the kept features are concatenated and a block
    follows, then Upsample. Finally GroupNorm, SiLU and a 3x3 conv to C channels, 2 C with learn_var,
    the second half giving r = (raw + 1) / 2 for [ND21, Eq. 15] from zero-initialised weights, as in `models.MLP`.

    Args: channels C of the images; width the base number of channels (a config value); mults the
    channel multiplier per resolution; block "resnet" or "convnext"; scale_shift AdaGN in resnet blocks;
    attention self-attention in the middle; learn_var whether to return (prediction, r); num_classes the
    number of class labels 0..num_classes-1 it can be given (None: unconditional), label num_classes is null;
    fourier_features exponents n: sin(2^n pi x_t) and cos(2^n pi x_t) join x_t at the input (`fourier_inputs`).
    """

    def __init__(self, channels=1, width=32, mults=(1, 2, 2), block="resnet", scale_shift=True, attention=True,
                 learn_var=False, groups=8, num_classes=None, fourier_features=()):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {BLOCKS}")
        if int(width) < 1 or not mults or min(mults) < 1:
            raise ValueError(f"width and mults must be positive, got width={width!r}, mults={mults!r}")
        self.channels, self.width, self.mults, self.learn_var = channels, int(width), tuple(mults), learn_var
        emb_dim = 4 * self.width

        def make_block(i, o):
            if block == "resnet":
                return ResnetBlock(i, o, emb_dim, groups, scale_shift)
            return ConvNextBlock(i, o, emb_dim)

        widths = [self.width * m for m in self.mults]
        self.time = TimeEmbedding(self.width + self.width % 2, emb_dim)
        self.num_classes = num_classes
        if num_classes is not None:
            if int(num_classes) < 1:
                raise ValueError(f"num_classes must be a positive number of classes, got {num_classes!r}")
            self.label = nn.Embedding(int(num_classes) + 1, emb_dim)
            nn.init.zeros_(self.label.weight)
        self.fourier_features = tuple(int(n) for n in fourier_features)
        self.stem = nn.Conv2d(channels * (1 + 2 * len(self.fourier_features)), self.width, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = self.width
        for i, w in enumerate(widths):
            self.down.append(make_block(prev, w))
            self.downsample.append(Downsample(w) if i < len(widths) - 1 else nn.Identity())
            prev = w
        self.mid1 = make_block(prev, prev)
        self.attn = SelfAttention(prev, heads=4 if prev % 4 == 0 else 1, groups=groups) if attention else None
        self.mid2 = make_block(prev, prev)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(make_block(prev + w, w))
            self.upsample.append(Upsample(w) if i > 0 else nn.Identity())
            prev = w
        self.head = nn.Sequential(nn.GroupNorm(_groups(prev, groups), prev), nn.SiLU(),
                                  nn.Conv2d(prev, channels * (2 if learn_var else 1), 3, padding=1))
        if learn_var:
            zero_variance_head_(self.head[-1], channels)

    def forward(self, xt, t, label=None):
        """xt (B, C, H, W), t (B,) int64, label (B,) int64 in 0..num_classes (num_classes: the null label; None:
        all null) -> prediction (B, C, H, W), or (prediction, r) with learn_var."""
        factor = 2 ** (len(self.mults) - 1)
        if xt.ndim != 4 or xt.shape[1] != self.channels or xt.shape[2] % factor or xt.shape[3] % factor:
            raise ValueError(f"UNet takes (B, {self.channels}, H, W) with H, W divisible by {factor}, "
                             f"got shape {tuple(xt.shape)}")
        emb = self.time(t)
        if label is not None and self.num_classes is None:
            raise ValueError("this UNet is unconditional (num_classes=None): it takes no class label")
        if self.num_classes is not None:
            if label is None:
                label = torch.full((xt.shape[0],), self.num_classes, dtype=torch.int64, device=xt.device)
            emb = emb + self.label(label)
        h, skips = self.stem(fourier_inputs(xt, self.fourier_features)), []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid1(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, emb)
        for block, up in zip(self.up, self.upsample):
            h = up(block(torch.cat([h, skips.pop()], dim=1), emb))
        out = self.head(h)
        if not self.learn_var:
            return out
        pred, raw_v = out.split(self.channels, dim=1)
        return pred, interpolation_from_raw(raw_v)
