"""The digits: the fixed split, the 17-level scaling, training and checkpoints on images, bits per dimension,
and the classifier-based quality measures (Frechet distance against closed forms)."""

import math

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.digit_quality import digit_quality, frechet_distance
from diffusion_lib.digits import DIGIT_LEVELS, digits_scaling, load_digits, quantize
from diffusion_lib.training import TrainConfig, Trainer

TINY = dict(data="digits", T=10, steps=3, batch_size=16, width=8, warmup_steps=1)


@pytest.fixture(scope="module")
def train():
    return load_digits("train")


@pytest.fixture(scope="module")
def test():
    return load_digits("test")


def test_split_is_fixed_disjoint_stratified_and_complete(train, test):
    every = load_digits("all")
    assert len(train) == 1437 and len(test) == 360 and len(every) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.float64
    assert set(train.images.unique().tolist()) <= set(range(DIGIT_LEVELS))
    # together the splits hold every distinct image of the full set (a few images occur twice)
    assert len(torch.cat([train.images, test.images]).unique(dim=0)) == len(every.images.unique(dim=0))
    assert torch.equal(load_digits("test").images, test.images)  # the same split every time
    assert torch.bincount(test.labels).min() >= 35  # every class held out, about 36 each


def test_scaling_puts_the_17_levels_on_the_discretized_decoders_grid():
    scaling = digits_scaling()
    levels = torch.arange(DIGIT_LEVELS, dtype=torch.float64)
    x = scaling.to_model(levels)
    # the decoder's bins have half-width 1 / (levels - 1): the grid is -1 + 2 k / (levels - 1)
    assert torch.allclose(x, -1 + 2 * levels / (DIGIT_LEVELS - 1))
    assert torch.equal(quantize(scaling.to_data(x + 0.03)), levels)
    assert torch.equal(quantize(torch.tensor([-3.0, 7.4, 99.0])), torch.tensor([0.0, 7.0, 16.0]))


def test_discretized_decoder_sums_to_one_over_the_17_levels():
    x = dl.digits_scaling().to_model(torch.arange(DIGIT_LEVELS, dtype=torch.float64))
    for mean, log_var in [(0.1, -3.0), (-0.9, -6.0), (0.5, 0.0)]:
        p = dl.discretized_gaussian_log_likelihood(x, torch.tensor(mean), log_var, levels=DIGIT_LEVELS).exp()
        assert abs(float(p.sum()) - 1) < 1e-12


def test_trainer_on_digits_draws_epochs_of_the_training_split(train):
    trainer = Trainer(TrainConfig(**TINY))
    pool = trainer.data_pool(0)
    assert pool.shape == (1437, 1, 8, 8) and pool.dtype == torch.float32
    expected = digits_scaling().to_model(train.images).float()
    # one round is one epoch: every training image exactly once, shuffled
    assert torch.equal(pool.reshape(1437, -1).sort(dim=0).values, expected.reshape(1437, -1).sort(dim=0).values)
    assert not torch.equal(pool, expected) and not torch.equal(pool, trainer.data_pool(1))
    assert torch.equal(pool, Trainer(TrainConfig(**TINY)).data_pool(0))
    assert trainer.next_batch().shape == (16, 1, 8, 8)
    assert isinstance(trainer.model, dl.UNet) and trainer.data_shape == (1, 8, 8)


def test_batches_larger_than_the_split_still_work():
    trainer = Trainer(TrainConfig(**{**TINY, "batch_size": 2000}))
    assert trainer.next_batch().shape == (2000, 1, 8, 8)


def test_swiss_roll_pool_is_the_documented_seeded_draw():
    trainer = Trainer(TrainConfig(T=10, hidden=(8,), seed=3))
    raw = dl.swiss_roll(2 ** 16, 0.5, seed=3 * 1_000_003 + 2)
    assert torch.allclose(trainer.scaling.to_data(trainer.data_pool(2).double()), raw, atol=1e-5)


def test_digit_training_reproduces_and_checkpoints_round_trip(tmp_path):
    def run():
        trainer = Trainer(TrainConfig(**TINY))
        return trainer, [r.loss for r in trainer.run()]

    (trainer, a), (_, b) = run(), run()
    assert a == b and all(math.isfinite(v) for v in a)
    path = dl.save_checkpoint(tmp_path / "digits.pt", trainer.sampling_model, trainer.config, trainer.scaling,
                              trainer.sched, trainer.step)
    ckpt = dl.load_checkpoint(path)
    assert isinstance(ckpt.model, dl.UNet) and ckpt.config.width == 8 and ckpt.config.data == "digits"
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 10])
    with torch.no_grad():
        assert torch.equal(ckpt.model(x, t), trainer.sampling_model(x, t))


@pytest.mark.parametrize("field, value, message", [("block", "vit", "unknown block"), ("width", 0, "width")])
def test_config_refuses_bad_unet_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**TINY, field: value}).validate()


def test_bits_per_dim_of_the_discretized_bound_has_no_jacobian(test):
    # a discrete bound is a bound on -log P(x): the same whatever the coordinates (no D log(scale) term)
    sched = dl.make_schedule("cosine", 10)
    torch.manual_seed(0)
    model = dl.UNet(width=8).eval()
    images = test.images[:6]
    kwargs = dict(decoder="discretized", levels=DIGIT_LEVELS)
    bound = dl.nll_bound(sched, model, digits_scaling(), images, generator=torch.Generator().manual_seed(0),
                         **kwargs)
    x0 = digits_scaling().to_model(images).float()
    terms = dl.bound_terms(sched, model, x0, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.allclose(bound.total, terms.total)
    assert bound.num_dims == 64
    assert math.isclose(bound.summary()["nll_bound_bpd"], float(terms.total.mean()) / (64 * math.log(2)))
    # splitting into batches: same L_T exactly, and each chunk's terms equal a direct call on that chunk
    chunked = dl.nll_bound(sched, model, digits_scaling(), images, batch_size=4,
                           generator=torch.Generator().manual_seed(1), **kwargs)
    g = torch.Generator().manual_seed(1)
    first = dl.bound_terms(sched, model, x0[:4], generator=g, **kwargs)
    second = dl.bound_terms(sched, model, x0[4:], generator=g, **kwargs)
    assert torch.allclose(chunked.total, torch.cat([first.total, second.total]))
    assert torch.equal(chunked.prior, bound.prior)


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    # for N(m1, S1), N(m2, S2) with commuting (diagonal) S: ||m1 - m2||^2 + sum (sqrt(s1) - sqrt(s2))^2
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    s1, s2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([2.0, 1.0, 1.0, 0.5])
    m1, m2 = torch.zeros(d), torch.tensor([1.0, -0.5, 0.0, 2.0])
    a = m1 + s1.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = m2 + s2.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
    exact = float((m1 - m2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum())
    # over 20 seeds the relative error had sd 0.0024 (max 0.0043): 0.03 is 12 sd, no seed comes near it
    assert abs(frechet_distance(a, b) - exact) < 0.03 * exact


def test_frechet_distance_against_the_general_formula_with_a_rotation():
    # a non-diagonal case: rotating both sets leaves FD unchanged, and FD(x, x) = 0
    g = torch.Generator().manual_seed(1)
    mix = torch.tensor([[1.0, 0.5, 0], [0, 1, 0.3], [0, 0, 2]], dtype=torch.float64)
    a = torch.randn(500, 3, generator=g, dtype=torch.float64) @ mix
    b = torch.randn(400, 3, generator=g, dtype=torch.float64) * 1.5 + 0.2
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    assert math.isclose(frechet_distance(a, b), frechet_distance(a @ q, b @ q), rel_tol=1e-9)
    assert frechet_distance(a, a) < 1e-9
    # Tr (S1 S2)^(1/2) through the eigenvalues of S1 S2 (real and >= 0 for PSD S1, S2)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    cross = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    direct = (a.mean(0) - b.mean(0)).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross
    assert math.isclose(frechet_distance(a, b), float(direct), rel_tol=1e-9)


def test_frechet_distance_refuses_bad_shapes():
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))


@pytest.fixture(scope="module")
def classifier(train):
    return dl.train_classifier(train, epochs=5)


def test_classifier_learns_the_digits(classifier, test):
    assert dl.classifier_accuracy(classifier, test) > 0.9


def test_quality_tells_real_digits_from_noise(classifier, train, test):
    real = digit_quality(classifier, train.images[:360], test)
    noise = digit_quality(classifier, torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 16,
                          test)
    ones = digit_quality(classifier, train.images[train.labels == 1][:100], test)
    # the classifier is trained, so its seed is a seed too. Over 40 classifier seeds (5-44): real class_tv
    # 0.065 +- 0.006 (max 0.075), confidence 0.956 +- 0.006, frechet / floor 0.99 +- 0.06 (max 1.11), noise
    # frechet / floor 14.6 (min 8.9, log sd 0.19: 3 floors is 8 sd below), ones recognised 98 of 100 (min 87,
    # class_tv min 0.77), noise confidence 0.19 or more below the real one. The former bounds (noise frechet
    # above 10 floors, >= 95 ones recognised, class_tv > 0.8) failed at 1, 3 and 3 of the 40 seeds.
    assert sum(real.class_counts) == 360 and real.class_tv < 0.1 and real.confidence > 0.9
    assert real.frechet < 2 * real.frechet_floor and noise.frechet > 3 * real.frechet_floor
    assert ones.class_counts[1] > 50 and ones.class_tv > 0.5  # a model that draws only ones is caught (real: 0.075)
    assert noise.confidence < real.confidence


def test_quality_refuses_bad_images(classifier, test):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digit_quality(classifier, torch.zeros(10, 64), test)
    with pytest.raises(ValueError, match="sampler diverged"):
        digit_quality(classifier, torch.full((4, 1, 8, 8), math.nan), test)


def test_independent_pixel_baseline_against_a_direct_count(train, test):
    from diffusion_lib.digits import independent_pixel_nll

    nll = independent_pixel_nll(train, test)
    assert nll.shape == (360,)
    # the first test image, each pixel's level counted by hand among the training digits (add-one smoothing)
    manual = 0.0
    for i in range(8):
        for j in range(8):
            lv = int(test.images[0, 0, i, j])
            c = int((train.images[:, 0, i, j] == lv).sum())
            manual -= math.log((c + 1) / (len(train) + DIGIT_LEVELS))
    assert math.isclose(float(nll[0]), manual, rel_tol=1e-12)
    # below the uniform code (log 17 per pixel): the histogram knows the borders are blank
    assert float(nll.mean()) < 64 * math.log(DIGIT_LEVELS)


def test_digit_quality_judges_images_ordered_by_class_like_mixed_ones(classifier, train, test):
    # a class-conditional sampler returns its images by class: chunked in that order, each chunk of 180 would
    # hold one or two classes and score far above the floor (over 400 against a floor of about 75 for the
    # sorted training digits); shuffled first, they score as the real digits do (frechet / floor 0.99 +- 0.06
    # over classifier seeds, see above: 2 floors is 16 standard deviations away)
    by_class = train.images[train.labels.argsort(stable=True)]
    quality = digit_quality(classifier, by_class, test)
    assert quality.frechet < 2 * quality.frechet_floor
    assert quality.frechet_se > 0 and 0 < quality.confidence_se < 0.02
