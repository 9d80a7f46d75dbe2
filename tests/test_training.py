"""Training (Algorithm 1): the config's checks, the three losses, importance sampling of t, the loop."""

import dataclasses

import pytest
import torch

import diffusion_lib as dl
from diffusion_lib.losses import HYBRID_LAMBDA, TimestepSampler, training_losses
from diffusion_lib.training import NonFiniteLossError, TrainConfig, Trainer, TrainRecord

TINY = dict(T=20, steps=5, batch_size=32, hidden=(16, 16), emb_dim=8, warmup_steps=1)


@pytest.mark.parametrize("field, value, message", [
    ("loss", "l1", "unknown loss 'l1'"),
    ("var", "big", "unknown var 'big'"),
    ("prediction", "velocity", "unknown prediction 'velocity'"),
    ("T", 0, "T must be positive"),
    ("ema", 1.0, r"ema must be a decay in \[0, 1\)"),
    ("max_seconds", -1.0, "max_seconds must be positive"),
])
def test_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()


def test_config_refuses_combinations_that_cannot_work():
    with pytest.raises(ValueError, match="simple loss cannot train a learned variance"):
        TrainConfig(loss="simple", var="learned").validate()
    with pytest.raises(ValueError, match="importance_sampling applies to the 'vlb' loss only"):
        TrainConfig(loss="hybrid", var="learned", importance_sampling=True).validate()


def test_same_seed_same_run():
    def losses(seed):
        return [r.loss for r in Trainer(TrainConfig(seed=seed, **TINY)).run()]

    a, b, c = losses(0), losses(0), losses(1)
    assert a == b and a != c and len(a) == TINY["steps"]


def test_records_and_the_ema_copy():
    trainer = Trainer(TrainConfig(**TINY))
    records = list(trainer.run())
    assert all(isinstance(r, TrainRecord) for r in records)
    assert [r.step for r in records] == [1, 2, 3, 4, 5]
    assert trainer.sampling_model is trainer.ema_model
    assert not trainer.ema_model.out.weight.requires_grad
    no_ema = Trainer(TrainConfig(**{**TINY, "ema": 0.0}))
    list(no_ema.run())
    assert no_ema.sampling_model is no_ema.model


def test_wall_clock_budget_stops_training():
    trainer = Trainer(TrainConfig(**{**TINY, "steps": 10 ** 9, "max_seconds": 0.5}))
    records = list(trainer.run())
    assert 0 < len(records) < 10 ** 9 and records[-1].seconds < 5


def test_simple_and_vlb_losses_are_the_defined_quantities():
    sched = dl.make_schedule("cosine", 20)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    t = torch.randint(1, 21, (8,), generator=gen)
    model = lambda xt, t: 0.5 * xt  # noqa: E731
    simple, none = training_losses(sched, model, x0, t, eps, "simple")
    xt = dl.q_sample(sched, x0, t, eps)
    assert none is None
    assert torch.allclose(simple, (eps - 0.5 * xt).pow(2).mean(dim=1))
    vlb, term = training_losses(sched, model, x0, t, eps, "vlb")
    step = dl.p_mean_variance(sched, xt, t, 0.5 * xt)
    assert torch.allclose(term, dl.vlb_term(sched, x0, xt, t, step.mean, step.log_var))
    assert torch.allclose(vlb, 20 * term / 2)  # T L_{t-1} / D


def test_hybrid_bound_trains_only_the_variance():
    # the mean is detached inside the bound term: d(hybrid)/d(prediction) = d(simple)/d(prediction)
    sched = dl.make_schedule("cosine", 20)
    gen = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    t = torch.randint(1, 21, (8,), generator=gen)
    pred = torch.randn(8, 2, generator=gen, requires_grad=True)
    v = torch.full((8, 2), 0.3, requires_grad=True)
    hybrid, term = training_losses(sched, lambda xt, t: (pred, v), x0, t, eps, "hybrid", var="learned")
    hybrid.sum().backward()
    assert torch.allclose(pred.grad, 2 * (pred - eps).detach() / 2)
    assert v.grad.abs().sum() > 0
    simple = (eps - pred.detach()).pow(2).mean(dim=1)
    assert torch.allclose(hybrid.detach(), simple.double() + HYBRID_LAMBDA * 20 * term.detach() / 2)


def test_importance_sampler_is_uniform_until_every_t_has_history():
    sampler = TimestepSampler(5, importance=True, history=2)
    sampler.update(torch.tensor([1, 1, 2, 2, 3, 3, 4, 4]), torch.ones(8))
    assert torch.allclose(sampler.probs(), torch.full((5,), 0.2, dtype=torch.float64))
    sampler.update(torch.tensor([5, 5]), torch.tensor([10.0, 10.0]))
    p = sampler.probs()
    assert p[4] > 0.7 and torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_importance_weights_are_unbiased():
    # E_p[w_t f(t)] = sum_t p_t f(t) / (T p_t) = mean_t f(t), exactly and by Monte Carlo
    T = 10
    sampler = TimestepSampler(T, importance=True, history=3)
    gen = torch.Generator().manual_seed(0)
    scales = torch.arange(1, T + 1, dtype=torch.float64) ** 2
    for _ in range(4):
        t = torch.arange(1, T + 1).repeat(3)
        sampler.update(t, scales[t - 1] * (1 + 0.1 * torch.randn(t.shape, generator=gen, dtype=torch.float64)))
    p = sampler.probs()
    assert not torch.allclose(p, torch.full_like(p, 1 / T))
    f = torch.sin(torch.arange(1, T + 1, dtype=torch.float64)) + 2
    assert torch.isclose((p * f / (T * p)).sum(), f.mean())
    t, w = sampler.sample(200_000, gen)
    values = w * f[t - 1]
    se = values.std() / len(values) ** 0.5
    assert abs(values.mean() - f.mean()) < 4 * se  # one check: 6.3e-5 false alarms at any seed (200 000 draws)


def test_non_finite_loss_stops_with_the_step_and_keeps_finite_weights():
    trainer = Trainer(TrainConfig(**{**TINY, "lr": 1e30, "steps": 50, "ema": 0.0, "lr_schedule": "constant"}))
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d+") as info:
        list(trainer.run())
    assert info.value.step == trainer.step + 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_importance_sampled_vlb_run_fills_the_history():
    cfg = TrainConfig(**{**TINY, "T": 4, "loss": "vlb", "var": "learned", "importance_sampling": True, "steps": 3})
    trainer = Trainer(cfg)
    list(trainer.run())
    assert (trainer.t_sampler.counts[1:] > 0).all()
