"""Ancestral sampling (Algorithm 2): from x_T ~ N(0, I) down to x_0, one reverse step at a time.

Contents: `StepCoefficients`, `step_coefficients`, `sample_loop`, `sample`, `sample_data`.

    x_T ~ N(0, I);  for t = T..1:  z ~ N(0, I) if t > 1 else 0
                                   x_{t-1} = mu_theta(x_t, t) + sigma_t z                [Ho20, Alg. 2]

mu_theta is affine in (x_t, output) for every parameterisation (eps, x0, mu), so the loop precomputes
mu_theta = a_t x_t + b_t output once per t, by evaluating `reverse.p_mean_variance` itself on unit
inputs; the hot loop is then one network call and three elementwise operations per step, with no
per-step validation. sigma_t comes from `reverse.reverse_variance` the same way (fixed_small,
fixed_large, optimal with its per-t `variances`), or from v for a learned variance [ND21, Eq. 15].
"""

from dataclasses import dataclass

import torch

from .reverse import check_variance, p_mean_variance, reverse_variance
from .vlb import split_output


@dataclass
class StepCoefficients:
    """Per-t Python floats, index t = 1..T (slot 0 unused): mean = a[t] x_t + b[t] output."""

    a: list
    b: list
    std: list  # sigma_t for a fixed variance
    log_small: list  # log beta_tilde_t (clipped), the learned variance's lower end
    log_large: list  # log beta_t, its upper end


def step_coefficients(sched, prediction="eps", var_type="fixed_small", variances=None):
    """The reverse step's coefficients for every t, taken from `p_mean_variance` (float64)."""
    check_variance(var_type, variances)
    T = sched.T
    t = torch.arange(1, T + 1)
    zero, one = torch.zeros(T, 1, dtype=torch.float64), torch.ones(T, 1, dtype=torch.float64)
    a = p_mean_variance(sched, zero, one, t, prediction).mean  # mean at x_t = 1, output = 0
    b = p_mean_variance(sched, one, zero, t, prediction).mean  # mean at x_t = 0, output = 1
    fixed = var_type if var_type in ("fixed_large", "optimal") else "fixed_small"
    _, log_var = reverse_variance(sched, t, zero, fixed, variances=variances)
    _, log_small = reverse_variance(sched, t, zero, "learned", v=zero)
    _, log_large = reverse_variance(sched, t, zero, "learned", v=one)

    def pad(x):
        return [0.0] + x.reshape(-1).tolist()

    return StepCoefficients(a=pad(a), b=pad(b), std=pad((0.5 * log_var).exp()),
                            log_small=pad(log_small), log_large=pad(log_large))


def sample_loop(sched, model, n, prediction="eps", var_type="fixed_small", generator=None,
                data_shape=(2,), x_T=None, progress=False, variances=None):
    """Algorithm 2 as a generator: yields (t, x_t) for t = T, T - 1, ..., 0, the last being x_0.

    Args: model a callable model(xt, t) (see `vlb.model_step`); n the number of samples; generator a
    torch.Generator for x_T and every z (same generator state, same samples); x_T optional start (n, ...);
    variances the (T + 1,) per-t variances for var_type="optimal" (`optimal_variance.optimal_variance`).
    Yields: (t, x_t) with x_t a float32 (n, *data_shape) tensor in model coordinates, created under
    torch.inference_mode (no autograd).
    """
    coef = step_coefficients(sched, prediction, var_type, variances)
    learned = var_type == "learned"
    ts = range(sched.T, 0, -1)
    if progress:
        from tqdm.auto import tqdm

        ts = tqdm(ts, desc="sampling", leave=False)
    with torch.inference_mode():
        x = torch.randn((n, *data_shape), generator=generator) if x_T is None else x_T.float()
        yield sched.T, x
        t_batch = torch.empty(n, dtype=torch.int64)
        for t in ts:
            out, v = split_output(model(x, t_batch.fill_(t)), var_type)
            mean = out * coef.b[t] + x * coef.a[t] if coef.a[t] != 0.0 else out * coef.b[t]
            if t == 1:
                x = mean  # no noise at the last step [Ho20, Alg. 2]
            else:
                z = torch.randn(x.shape, generator=generator)
                if learned:
                    # log sigma_t^2 = v log beta_t + (1 - v) log beta_tilde_t   [ND21, Eq. 15]
                    log_var = coef.log_small[t] + v * (coef.log_large[t] - coef.log_small[t])
                    x = mean + (0.5 * log_var).exp() * z
                else:
                    x = torch.add(mean, z, alpha=coef.std[t])
            yield t - 1, x


def sample(sched, model, n, prediction="eps", var_type="fixed_small", generator=None, data_shape=(2,),
           progress=False, variances=None):
    """x_0 from Algorithm 2: a float32 (n, *data_shape) tensor in model coordinates."""
    for _, x in sample_loop(sched, model, n, prediction, var_type, generator, data_shape, progress=progress,
                            variances=variances):
        pass
    return x


def sample_data(sched, model, scaling, n, prediction="eps", var_type="fixed_small", generator=None,
                progress=False, data_shape=(2,), variances=None):
    """n samples mapped back to raw data coordinates with `scaling.to_data`: float64 (n, *data_shape)."""
    x0 = sample(sched, model, n, prediction, var_type, generator, data_shape, progress=progress, variances=variances)
    return scaling.to_data(x0.double())
