"""The 8x8 handwritten digits of scikit-learn as image data for the same diffusion code as the swiss roll.

Contents: `DIGIT_LEVELS`, `TEST_FRACTION`, `Digits`, `load_digits`, `digits_scaling`, `quantize`,
`independent_pixel_nll`.

scikit-learn ships 1797 digits (no download), 8x8 pixels with integer intensities 0..16: 17 levels.
The diffusion works on x = v / 8 - 1 in [-1, 1] (an `AffineScaling` with shift 8 and scale 8), the
17 levels 1/8 apart, so the discretized decoder of [Ho20, Eq. 13] with `levels=17` gives L_0 as a
probability of the exact pixel values and the bound is a bound on -log P(image) in nats (no Jacobian:
the data is discrete), reported in bits per dimension (64 dimensions).
The split into training and held-out digits is fixed (stratified by class, seed 0), so every notebook,
test and checkpoint means the same 1437 training and 360 held-out images.
"""

from dataclasses import dataclass

import torch

from .scaling import AffineScaling

DIGIT_LEVELS = 17  # intensities 0..16
TEST_FRACTION = 0.2  # held-out share of the 1797 digits
IMAGE_SHAPE = (1, 8, 8)


@dataclass
class Digits:
    """Images (N, 1, 8, 8) float64 with raw intensities 0..16, and their labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return self.images.shape[0]


def load_digits(split="train"):
    """The digits of one split: "train" (1437), "test" (360, held out) or "all" (1797), as `Digits`."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'")
    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64).reshape(-1, *IMAGE_SHAPE)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split == "all":
        return Digits(images, labels)
    train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION,
                                           stratify=labels.numpy(), random_state=0)
    idx = torch.as_tensor(train_idx if split == "train" else test_idx)
    return Digits(images[idx], labels[idx])


def digits_scaling():
    """Raw intensities 0..16 <-> model coordinates in [-1, 1]: x = (v - 8) / 8."""
    half = (DIGIT_LEVELS - 1) / 2
    return AffineScaling(shift=(half,), scale=half)


def quantize(images):
    """Round raw-coordinate images (e.g. samples) to the nearest intensity 0..16, as float64."""
    return torch.as_tensor(images).double().round().clamp(0, DIGIT_LEVELS - 1)


def independent_pixel_nll(train, test, smoothing=1.0):
    """-log P(image) in nats per image under independent pixels, each a categorical over the 17 levels
    fitted to `train` (counts + smoothing): the baseline that ignores every correlation between pixels.

    Returns a float64 (N,) tensor for the N images of `test`.
    """
    levels_train = train.images.long().reshape(len(train), -1)  # (N, 64)
    counts = torch.zeros(levels_train.shape[1], DIGIT_LEVELS, dtype=torch.float64)
    counts.scatter_add_(1, levels_train.T, torch.ones_like(levels_train.T, dtype=torch.float64))
    log_p = (counts + smoothing).log() - (counts + smoothing).sum(dim=1, keepdim=True).log()  # (64, 17)
    levels_test = test.images.long().reshape(len(test), -1)
    return -log_p.gather(1, levels_test.T).sum(dim=0)
