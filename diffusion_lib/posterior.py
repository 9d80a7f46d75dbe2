"""The forward-process posterior q(x_{t-1} | x_t, x_0) and the parameterisations eps, x0, mu and v.

    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)                        [Ho20, Eq. 6]
    mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t        [Ho20, Eq. 7]

A network may predict the noise eps, the clean data x_0, the posterior mean mu directly, or the
"velocity" v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 [Sa22, Sec. 4]; given x_t each
determines the others [Ho20, Eq. 4 and 11]:

    x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)  = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v
    eps =                                                           sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v
    mu  = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)

v keeps both ends well conditioned: an error in v reaches x_0 damped by sqrt(1 - alpha_bar_t) (small t)
and eps damped by sqrt(alpha_bar_t) (large t, where an eps-predicting network's error is magnified by
1 / sqrt(alpha_t) in the mean, e.g. at the cosine schedule's clipped last step).
"""

from .indexing import check_data, check_t, gather

PREDICTIONS = ("eps", "x0", "mu", "v")


def q_posterior(sched, x0, xt, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0) [Ho20, Eq. 6-7].

    Returns: (mean, var), both (B, ...). At t = 1 the posterior is exact: mean = x_0, var = 0.
    """
    check_data("x0", x0)
    check_data("xt", xt, like=x0)
    t = check_t(t, sched.T, x0.shape[0])
    mean = gather(sched.posterior_coef_x0, t, x0) * x0 + gather(sched.posterior_coef_xt, t, x0) * xt
    var = gather(sched.beta_tilde, t, x0).expand_as(x0)
    return mean, var


def x0_from_eps(sched, xt, t, eps):
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), inverting [Ho20, Eq. 4]."""
    t = check_t(t, sched.T, xt.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, xt)
    return (xt - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def eps_from_x0(sched, xt, t, x0):
    """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t) [Ho20, Eq. 4]."""
    t = check_t(t, sched.T, xt.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, xt)
    return (xt - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


def mu_from_x0(sched, xt, t, x0):
    """mu = mu_tilde_t(x_t, x_0), the posterior mean with x_0 plugged in [Ho20, Eq. 7]."""
    t = check_t(t, sched.T, xt.shape[0])
    return gather(sched.posterior_coef_x0, t, xt) * x0 + gather(sched.posterior_coef_xt, t, xt) * xt


def mu_from_eps(sched, xt, t, eps):
    """mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) [Ho20, Eq. 11].

    A common misprint writes sqrt(1 - alpha_t) in place of beta_t / sqrt(1 - alpha_bar_t).
    """
    t = check_t(t, sched.T, xt.shape[0])
    beta_t = gather(sched.beta, t, xt)
    alpha_bar_t = gather(sched.alpha_bar, t, xt)
    return (xt - beta_t / (1 - alpha_bar_t).sqrt() * eps) / (1 - beta_t).sqrt()


def x0_from_mu(sched, xt, t, mu):
    """x_0 = (mu - coef_xt x_t) / coef_x0, inverting [Ho20, Eq. 7] (coef_x0 > 0 for every t)."""
    t = check_t(t, sched.T, xt.shape[0])
    return (mu - gather(sched.posterior_coef_xt, t, xt) * xt) / gather(sched.posterior_coef_x0, t, xt)


def v_from_eps_x0(sched, t, eps, x0):
    """The training target of a v-predicting network: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 [Sa22]."""
    t = check_t(t, sched.T, x0.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, x0)
    return alpha_bar_t.sqrt() * eps - (1 - alpha_bar_t).sqrt() * x0


def x0_from_v(sched, xt, t, v):
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v [Sa22, Sec. 4]."""
    t = check_t(t, sched.T, xt.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, xt)
    return alpha_bar_t.sqrt() * xt - (1 - alpha_bar_t).sqrt() * v


def eps_from_v(sched, xt, t, v):
    """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v [Sa22, Sec. 4]."""
    t = check_t(t, sched.T, xt.shape[0])
    alpha_bar_t = gather(sched.alpha_bar, t, xt)
    return (1 - alpha_bar_t).sqrt() * xt + alpha_bar_t.sqrt() * v


def prediction_target(sched, x0, xt, t, eps, prediction):
    """What a network that predicts `prediction` is trained to output at (x_0, x_t, t, eps) [Ho20, Eq. 14; Sa22]."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "mu":
        return q_posterior(sched, x0, xt, t)[0]
    if prediction == "v":
        return v_from_eps_x0(sched, t, eps, x0)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def convert_prediction(sched, xt, t, output, prediction):
    """All three of (eps, x0, mu) from a network output that predicts `prediction` (one of PREDICTIONS)."""
    if prediction == "eps":
        eps = output
        x0 = x0_from_eps(sched, xt, t, eps)
    elif prediction == "x0":
        x0 = output
        eps = eps_from_x0(sched, xt, t, x0)
    elif prediction == "mu":
        x0 = x0_from_mu(sched, xt, t, output)
        eps = eps_from_x0(sched, xt, t, x0)
    elif prediction == "v":
        x0 = x0_from_v(sched, xt, t, output)
        eps = eps_from_v(sched, xt, t, output)
    else:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    mu = output if prediction == "mu" else mu_from_x0(sched, xt, t, x0)
    return eps, x0, mu
