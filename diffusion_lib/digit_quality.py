"""How good are generated digits? A small classifier trained on real digits, and what it says about samples.

Contents: `DigitClassifier`, `train_classifier`, `classifier_accuracy`, `frechet_distance`, `DigitQuality`,
`digit_quality`.

Images carry no exact density to compare against (unlike the swiss roll), so sample quality is judged
through a classifier trained on the real training digits, the idea behind the Inception score and FID
[Sa16; He17] at the scale of 8x8 digits:
  - the class histogram of the samples (a good model draws every digit about equally often: the data
    is balanced), and its total-variation distance from uniform;
  - the mean confidence, the average top class probability (blurry or odd digits get low confidence);
  - the Frechet distance between Gaussians fitted to classifier features of samples and of held-out
    real digits [He17]:  FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).
FD has a floor above zero even for perfect samples (finite-sample noise), so it is reported with the
FD between two disjoint halves of the held-out digits ("real vs real"), at the same set size. Held-out
digits, not training digits: the classifier has seen the training digits and maps them more sharply.
[Sa16] Salimans et al. 2016, Improved techniques for training GANs. [He17] Heusel et al. 2017, GANs
trained by a two time-scale update rule converge to a local Nash equilibrium.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .digits import DIGIT_LEVELS

NUM_CLASSES = 10
FEATURE_DIM = 64


class DigitClassifier(nn.Module):
    """Raw digits (B, 1, 8, 8), intensities 0..16 -> class logits (B, 10); `features` (B, 64) for FD."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 8x8 -> 4x4
            nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images):
        """The penultimate layer (B, 64): what the Frechet distance compares."""
        x = torch.as_tensor(images).float() / (DIGIT_LEVELS - 1)
        return self.conv(x)

    def forward(self, images):
        return self.head(self.features(images))


def train_classifier(digits, epochs=30, batch_size=64, lr=2e-3, seed=0):
    """Train a DigitClassifier on `digits` (a `digits.Digits`) with Adam; returns it in eval mode.

    Deterministic for a seed: the initial weights and the order of the examples come from it.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's global generator untouched
        torch.manual_seed(seed)
        model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(digits)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            loss = F.cross_entropy(model(digits.images[idx]), digits.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(classifier, digits):
    """Fraction of `digits` the classifier labels correctly."""
    return float((classifier(digits.images).argmax(dim=1) == digits.labels).double().mean())


def _sqrtm_psd(a):
    """The symmetric square root of a symmetric positive semi-definite matrix (float64)."""
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(features_1, features_2):
    """The Frechet (2-Wasserstein) distance between Gaussians fitted to two feature sets (N, d), (M, d).

    FD = ||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1^(1/2) S_2 S_1^(1/2))^(1/2))   [He17]
    (Tr (S_1 S_2)^(1/2) computed through the symmetric form, which is stable in float64).
    """
    f1, f2 = torch.as_tensor(features_1).double(), torch.as_tensor(features_2).double()
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError(f"need two (N, d) feature sets with the same d and N >= 2, got {tuple(f1.shape)} "
                         f"and {tuple(f2.shape)}")
    mu1, mu2 = f1.mean(dim=0), f2.mean(dim=0)
    s1, s2 = torch.cov(f1.T).reshape(f1.shape[1], -1), torch.cov(f2.T).reshape(f2.shape[1], -1)
    root1 = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp(min=0).sqrt().sum()
    # FD >= 0; rounding can leave -1e-5 for identical sets
    return max(0.0, float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross))


@dataclass
class DigitQuality:
    """What the classifier says about a set of images (see the module docstring)."""

    class_counts: list  # how many images fall in each class 0..9
    class_tv: float  # total-variation distance of the class histogram from uniform
    confidence: float  # mean top-class probability
    frechet: float  # FD to held-out half B, averaged over chunks of the images of half A's size
    frechet_floor: float  # FD of held-out half A to held-out half B: real vs real, same sizes
    confidence_se: float = float("nan")  # standard error of the mean top-class probability
    frechet_se: float = float("nan")  # from the spread over the chunks (nan with one chunk)


@torch.no_grad()
def digit_quality(classifier, images, test, seed=0):
    """Judge raw images (N, 1, 8, 8) (intensities 0..16) against held-out real digits `test` (`Digits`).

    The held-out digits are split in two halves A and B (a permutation drawn with `seed`). FD compares
    sets of equal size m = min(N, |A|) with B: the images, shuffled with `seed` (so that images ordered by
    class, as a class-conditional sampler returns them, are not judged one class per chunk), in chunks of
    m (averaged; the standard error from their spread), and the floor A[:m]. Neither the classifier nor
    the diffusion model has seen A or B.
    """
    images = torch.as_tensor(images).double()
    if images.ndim != 4 or images.shape[1:] != test.images.shape[1:] or images.shape[0] < 2:
        raise ValueError(f"images must be (N, 1, 8, 8) with N >= 2, got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf: the sampler diverged")
    n = images.shape[0]
    probs = classifier(images).softmax(dim=1)
    counts = torch.bincount(probs.argmax(dim=1), minlength=NUM_CLASSES)
    class_tv = float(0.5 * (counts.double() / n - 1 / NUM_CLASSES).abs().sum())
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    half_a, half_b = test.images[order[:len(test) // 2]], test.images[order[len(test) // 2:]]
    m = min(n, half_a.shape[0])
    reference = classifier.features(half_b)
    shuffled = images[torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))]
    features = classifier.features(shuffled)
    chunks = torch.tensor([frechet_distance(features[i:i + m], reference) for i in range(0, n - m + 1, m)])
    top = probs.max(dim=1).values
    return DigitQuality(class_counts=counts.tolist(), class_tv=class_tv,
                        confidence=float(top.mean()), confidence_se=float(top.std() / n ** 0.5),
                        frechet=float(chunks.mean()),
                        frechet_se=float(chunks.std() / len(chunks) ** 0.5) if len(chunks) > 1 else float("nan"),
                        frechet_floor=frechet_distance(classifier.features(half_a[:m]), reference))
