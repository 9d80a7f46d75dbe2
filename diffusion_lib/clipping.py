"""Clipping the predicted x_0, as image codebases do by default (`clip_denoised=True`).

Contents: `clip_x0_denoiser`.

improved-diffusion clamps x0_pred = (x_t - sqrt(1 - ab_t) eps_pred) / sqrt(ab_t) [Ho20, Eq. 4] to
[-1, 1] before the posterior mean [Ho20, Eq. 7]. For an eps-predicting model the same step follows from
recomputing eps from the clipped x_0, so the wrapped model runs in any sampler of `sample_loop`.
Clipping is only right when the data really lie in the box; for data at another scale it distorts them.
"""

from .indexing import check_t
from .posterior import eps_from_x0, x0_from_eps


def clip_x0_denoiser(sched, model, low=-1.0, high=1.0):
    """An eps-predicting model(xt, t) whose implied x_0 = x0_from_eps(...) is clamped to [low, high].

    eps' = (x_t - sqrt(ab_t) clamp(x0_pred, low, high)) / sqrt(1 - ab_t). Args: sched the schedule the
    model runs on (a respaced one if the model is `Respaced.wrap`ped); model an eps-predicting callable
    (a learned variance output (eps, v) keeps its v). Returns the wrapped callable.
    """
    if not low < high:
        raise ValueError(f"need low < high for the clipping box, got low={low!r}, high={high!r}")

    def clipped(xt, t):
        t = check_t(t, sched.T, xt.shape[0])
        out = model(xt, t)
        eps, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        x0 = x0_from_eps(sched, xt.double(), t, eps.double()).clamp(low, high)
        eps = eps_from_x0(sched, xt.double(), t, x0).to(xt.dtype)
        return (eps, *rest) if rest is not None else eps

    return clipped
