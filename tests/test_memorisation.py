"""Nearest-training distances against a brute-force loop, the copy test's exact null, fixed training sets."""

import math

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.memorisation import _hypergeometric_tail


def _brute_force(queries, references):
    q, r = queries.double().flatten(1), references.double().flatten(1)
    dist, idx = [], []
    for x in q:
        d = [math.sqrt(sum((a - b) ** 2 for a, b in zip(x.tolist(), y.tolist()))) for y in r]
        idx.append(min(range(len(d)), key=d.__getitem__))
        dist.append(d[idx[-1]])
    return torch.tensor(dist, dtype=torch.float64), torch.tensor(idx)


def test_nearest_distances_match_a_loop_for_points_and_images():
    gen = torch.Generator().manual_seed(0)
    for shape in [(3,), (1, 4, 4)]:
        refs = torch.randn(23, *shape, generator=gen)
        queries = torch.randn(17, *shape, generator=gen)
        dist, idx = dl.nearest_distances(queries, refs, chunk=5)  # several chunks
        ref_dist, ref_idx = _brute_force(queries, refs)
        assert torch.equal(idx, ref_idx)
        assert torch.allclose(dist, ref_dist, atol=1e-12)


def test_copies_get_distance_zero_and_their_own_index():
    digits = dl.load_digits("train").images[:300]
    copies = digits[[5, 77, 299]]
    dist, idx = dl.nearest_distances(copies, digits)
    assert torch.equal(dist, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(digits[idx], copies)  # the same image (the split may hold duplicates)
    # one level off in one pixel: distance exactly 1 in raw units
    off = copies.clone()
    off[:, 0, 0, 0] += 1
    assert torch.equal(dl.nearest_distances(off[:1], copies[:1])[0], torch.ones(1, dtype=torch.float64))


def test_nearest_distances_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        dl.nearest_distances(torch.zeros(3, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        dl.nearest_distances(torch.full((3, 2), float("nan")), torch.zeros(4, 2))


def test_hypergeometric_tail_against_enumeration():
    # 3 marked of 7 items, draw 4: enumerate all C(7, 4) = 35 draws
    import itertools

    counts = [sum(i < 3 for i in draw) for draw in itertools.combinations(range(7), 4)]
    for x in range(5):
        assert math.isclose(_hypergeometric_tail(3, 4, 4, x), sum(c >= x for c in counts) / 35, rel_tol=1e-12)


def test_copy_test_null_is_exact_and_copies_are_caught():
    gen = torch.Generator().manual_seed(1)
    # the null: samples and held-out examples from one distribution (ties included); p-values are
    # super-uniform, so P(p <= 0.1) <= 0.1: over 2000 trials the rate is 0.1 +- 0.007 (5 SE: 0.035)
    p = torch.tensor([dl.copy_test(torch.randint(0, 30, (60,), generator=gen).double(),
                                   torch.randint(0, 30, (40,), generator=gen).double(), tail=0.1,
                                   generator=gen).p_value for _ in range(2000)])
    assert (p <= 0.1).double().mean() < 0.1 + 0.035
    assert (p <= 0.5).double().mean() > 0.5 - 0.25  # and not absurdly conservative
    # a sampler that copies 20% of 360 samples: all 36 tail slots go to its zeros
    held = torch.rand(360, generator=gen, dtype=torch.float64) + 1
    samples = torch.cat([torch.zeros(72, dtype=torch.float64), torch.rand(288, generator=gen, dtype=torch.float64) + 1])
    result = dl.copy_test(samples, held, tail=0.05, generator=gen)
    assert (result.k, result.in_tail, result.expected) == (36, 36, 18.0)
    assert math.isclose(result.p_value, math.comb(360, 36) / math.comb(720, 36))
    with pytest.raises(ValueError, match="tail"):
        dl.copy_test(samples, held, tail=1.5)
    # a margin scales the samples' distances: samples 20% closer pass with margin 0.8, copies still do not
    closer = dl.copy_test(0.8 * held, held, margin=0.8, generator=gen)
    assert closer.in_tail == 18 or closer.p_value > 0.05  # exact ties: the random tie-break halves the tail
    assert dl.copy_test(samples, held, margin=0.8, generator=gen).in_tail == 36


def test_memorising_denoiser_on_images_equals_it_on_flattened_points():
    sched = dl.make_schedule("cosine", 50)
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(20, 1, 4, 4, generator=gen, dtype=torch.float64)
    xt = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([1, 2, 5, 10, 30, 50])
    flat = dl.memorising_x0(xt.flatten(1), t, sched, train.flatten(1))
    images = dl.memorising_x0(xt, t, sched, train)
    assert images.shape == xt.shape and torch.allclose(images.flatten(1), flat, atol=1e-12)
    eps = dl.memorising_denoiser(sched, train)(xt, t)
    assert eps.shape == xt.shape
    assert torch.allclose(eps.flatten(1), dl.memorising_denoiser(sched, train.flatten(1))(xt.flatten(1), t), atol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        dl.memorising_x0(xt, t, sched, train.flatten(1))


def test_fixed_training_set_repeats_the_same_examples():
    fixed = dl.FixedTrainingSet("swiss_roll", 10, name="swiss_roll_10_test")
    config = dl.TrainConfig(batch_size=64, seed=3)
    x = fixed.examples(config)
    assert torch.equal(x, dl.get_data_set("swiss_roll").training_pool(config, 0)[:10])
    for round in (0, 1):
        pool = fixed.training_pool(config, round)
        assert pool.shape[0] >= 2 ** 16 and pool.shape[0] % 10 == 0
        # every example appears equally often, and nothing else appears
        _, counts = torch.unique(pool, dim=0, return_counts=True)
        assert counts.numel() == 10 and (counts == pool.shape[0] // 10).all()
    assert not torch.equal(fixed.training_pool(config, 0)[:50], fixed.training_pool(config, 1)[:50])
    dl.register_data_set(fixed)
    try:
        trainer = dl.Trainer(dl.TrainConfig(data=fixed.name, steps=3, batch_size=64, hidden=(16,), seed=3))
        list(trainer.run())
        batch = trainer.scaling.to_data(trainer.next_batch().double())
        assert torch.cdist(batch, x).min(dim=1).values.max() < 1e-5  # float32 round trip
    finally:
        dl.DATASETS.pop(fixed.name)
    with pytest.raises(ValueError, match="positive"):
        dl.FixedTrainingSet("swiss_roll", 0)


def test_fixed_training_set_of_a_labelled_data_set_trains_unconditionally():
    # the digits' pools carry labels; the cut-down set keeps its n images, trains a U-Net and drops the labels
    fixed = dl.FixedTrainingSet("digits", 5, name="digits_5_test")
    config = dl.TrainConfig(data="digits", width=8, T=10, steps=2, batch_size=8, device="cpu")
    examples = fixed.examples(config)
    assert examples.shape == (5, 1, 8, 8)
    assert torch.equal(examples, dl.get_data_set("digits").training_pool(config, 0)[0][:5])
    dl.register_data_set(fixed)
    try:
        trainer = dl.Trainer(dl.TrainConfig(data=fixed.name, width=8, T=10, steps=2, batch_size=8, device="cpu"))
        assert len(list(trainer.run())) == 2
    finally:
        del dl.DATASETS[fixed.name]
