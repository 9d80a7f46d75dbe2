"""The one evaluation of a trained model: samples, the NLL bound on held-out data, and the data set's own measures.

Contents: `Evaluation`, `evaluate`, `variances_for`.

`python -m diffusion_lib evaluate` prints what this returns; a notebook calls it on a `Trainer` or a loaded
`Checkpoint` (both carry the schedule, the scaling, the config and the weights to sample from). Every part
is seeded by `seed`: the samples, the bound's noise, the held-out examples, the data for the optimal variance.
"""

from dataclasses import dataclass

import torch

from .data_registry import get_data_set
from .evaluation import nll_bound
from .optimal_variance import optimal_variance
from .sampling import sample_data, sampling_plan


@dataclass
class Evaluation:
    """What `evaluate` measured: `result` (JSON-ready numbers), `rows` (name, text) to print, the raw samples."""

    result: dict
    rows: list
    samples: torch.Tensor

    def __str__(self):
        return "\n".join(f"{name:<17} {value}" for name, value in self.rows)


def variances_for(run, var, var_n=2000, seed=0, progress=False):
    """The (T + 1,) per-t variances for var "optimal" (None for any other var), estimated on the data set's
    `variance_data` (fresh swiss-roll points, or the digits' training split): data no bound is scored on."""
    if var != "optimal":
        return None
    cfg = run.config
    x_raw = get_data_set(cfg.data).variance_data(var_n, cfg, seed)
    x0 = run.scaling.to_model(torch.as_tensor(x_raw).double()).float()
    return optimal_variance(run.sched, run.sampling_model, x0, cfg.prediction, torch.Generator().manual_seed(seed),
                            batch_size=500, progress=progress).var


def evaluate(run, n=5000, nll_n=2000, seed=0, var=None, var_n=2000, sampler="ancestral", steps=None,
             spacing=None, eta=None, label=None, guidance=0.0, exact_nll=False, progress=False):
    """Sample n examples and bound -log p on nll_n held-out examples; returns an Evaluation.

    run: a Trainer or a Checkpoint. var: the reverse variance (None: the run's own; "optimal" is estimated
    from var_n examples first). sampler, steps, spacing, eta, label, guidance: as for `sampling.sample`.
    exact_nll: also the exact NLL by the probability-flow ODE (continuous data only). Raises ValueError
    (one line) for a choice that does not fit the run.
    """
    import time

    cfg, model = run.config, run.sampling_model
    var = var or cfg.var
    data_set = get_data_set(cfg.data)
    if exact_nll and data_set.decoder != "gaussian":
        raise ValueError(f"--exact-nll is for continuous data: {cfg.data} is discrete data, whose likelihood is "
                         "the bound's (a density would need dequantization)")
    plan = sampling_plan(run.sched, sampler, steps, spacing)
    start = time.perf_counter()
    variances = variances_for(run, var, var_n, seed, progress)
    samples = sample_data(run.sched, model, run.scaling, n, cfg.prediction, var, torch.Generator().manual_seed(seed),
                          progress=progress, data_shape=data_set.data_shape, variances=variances, sampler=sampler,
                          steps=steps, spacing=spacing, eta=eta, label=label, guidance=guidance)
    if not torch.isfinite(samples).all():
        raise FloatingPointError("the sampler produced NaN or inf values: the model is broken; retrain it")
    samples = data_set.output(samples)
    x_eval = data_set.held_out(nll_n, cfg, seed)
    bound = nll_bound(run.sched, model, run.scaling, x_eval, cfg.prediction, var, torch.Generator().manual_seed(seed),
                      progress=progress, decoder=data_set.decoder, levels=data_set.levels or 256,
                      batch_size=data_set.bound_batch_size, variances=variances).summary()
    rows, extra = data_set.evaluate(run, samples, x_eval, bound, seed=seed, exact_nll=exact_nll)
    result = {"data": cfg.data, "schedule": cfg.schedule, "T": cfg.T, "loss": cfg.loss,
              "prediction": cfg.prediction, "var": var, "train_steps": getattr(run, "step", None),
              "sampler": plan.sampler, "steps": len(plan.timesteps), "nfe": plan.nfe, "spacing": plan.spacing,
              "n": n, "nll_n": x_eval.shape[0], "seed": seed, **bound, **extra,
              "seconds": time.perf_counter() - start}
    if data_set.decoder == "discretized":
        headline = (f"{bound['nll_bound_bpd']:.4f} bits/dim ({bound['nll_bound']:.2f} +- {bound['nll_bound_se']:.2f} "
                    f"nats per example)")
        decoder = f"discretized, {data_set.levels} levels"
    else:
        headline = f"{bound['nll_bound']:.4f} +- {bound['nll_bound_se']:.4f} nats ({bound['nll_bound_bpd']:.4f} bits/dim)"
        decoder = "raw coordinates"
    rows = [("NLL bound", headline), ("  L_T", f"{bound['L_T']:.4f} nats"),
            ("  sum L_{t-1}", f"{bound['sum_L_t_minus_1']:.4f} nats"), ("  L_0", f"{bound['L_0']:.4f} nats ({decoder})"),
            ("sampler", f"{plan.sampler}, {len(plan.timesteps)} steps, {plan.nfe} NFE"), *rows]
    return Evaluation(result=result, rows=rows, samples=samples)
