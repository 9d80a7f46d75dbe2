"""dl.evaluate: the one evaluation that the CLI prints, callable on a Trainer or a Checkpoint."""

import pytest
import torch

import diffusion_lib as dl


@pytest.fixture(scope="module")
def trainer():
    trainer = dl.Trainer(dl.TrainConfig(T=30, steps=60, batch_size=128, hidden=(32, 32), seed=0, device="cpu"))
    for _ in trainer.run():
        pass
    return trainer


def test_evaluate_a_trainer_scores_its_ema_weights_like_the_parts_do(trainer):
    evaluation = dl.evaluate(trainer, n=300, nll_n=100, seed=4)
    result = evaluation.result
    # the same bound and samples, assembled by hand from the library's parts with the same seeds
    x_eval = dl.swiss_roll(100, 0.5, seed=2_000_000 + 4)
    bound = dl.nll_bound(trainer.sched, trainer.sampling_model, trainer.scaling, x_eval, "v", "fixed_small",
                         torch.Generator().manual_seed(4)).summary()
    samples = dl.sample_data(trainer.sched, trainer.sampling_model, trainer.scaling, 300, "v", "fixed_small",
                             torch.Generator().manual_seed(4))
    assert result["nll_bound"] == bound["nll_bound"] and torch.equal(evaluation.samples, samples)
    assert result["sw_ratio"] == dl.sample_metrics(samples, 0.5, seed=4)["sw_ratio"]
    assert result["train_steps"] == 60 and result["nll_n"] == 100 and result["nfe"] == 30
    assert "NLL bound" in str(evaluation) and "entropy floor" in str(evaluation)


def test_a_checkpoint_evaluates_the_same_as_its_trainer(trainer, tmp_path):
    path = dl.save_checkpoint(tmp_path / "m.pt", trainer.sampling_model, trainer.config, trainer.scaling,
                              trainer.sched, trainer.step)
    a = dl.evaluate(trainer, n=100, nll_n=40, seed=1, sampler="ddim", steps=10, var="fixed_large")
    b = dl.evaluate(dl.load_checkpoint(path), n=100, nll_n=40, seed=1, sampler="ddim", steps=10, var="fixed_large")
    assert {k: v for k, v in a.result.items() if k != "seconds"} == {k: v for k, v in b.result.items() if k != "seconds"}


def test_evaluate_refuses_what_does_not_fit_the_run(trainer):
    with pytest.raises(ValueError, match="needs a class-conditional network"):
        dl.evaluate(trainer, n=10, nll_n=10, label=3)  # an unconditional network
    digits = dl.Trainer(dl.TrainConfig(data="digits", width=8, T=10, steps=1, device="cpu"))
    with pytest.raises(ValueError, match="--exact-nll is for continuous data"):
        dl.evaluate(digits, n=4, nll_n=4, exact_nll=True)


@pytest.mark.parametrize("name, first_keyword_only", [
    ("nll_bound", "progress"), ("bound_terms", "progress"), ("sample", "data_shape"), ("sample_loop", "data_shape"),
    ("sample_data", "progress")])
def test_long_signatures_take_their_options_by_keyword(name, first_keyword_only):
    # past the generator, options are keyword-only: 11 positional slots would swap silently
    import inspect

    params = inspect.signature(getattr(dl, name)).parameters
    assert params[first_keyword_only].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(params).index(first_keyword_only) <= 7
