"""Sampling: one loop for every sampler, from noise down to x_0, yielding every x_t on the way.

Contents: `SAMPLERS`, `SamplingPlan`, `sampling_plan`, `StepCoefficients`, `step_coefficients`,
`sample_loop`, `sample`, `sample_data`, `ddim_invert`.

A sampler visits K trained steps t_K > ... > t_1 (`respacing.select_timesteps`), starts from
x_{t_K} ~ N(0, I) and moves from each t to the next s (the last s is 0, the data). Every rule below is
written with ab = alpha_bar, the network's x0_hat and eps_hat at (x_t, t) [Ho20, Eq. 4], and
sigma_t = sqrt((1 - ab_t) / ab_t), lambda_t = -log sigma_t (the half log-SNR):

    "ancestral"   x_s ~ p_theta(x_s | x_t): Algorithm 2 [Ho20] on every step, or on the respaced
                  schedule ab'_k = ab_{t_k} [ND21, Sec. 4]; every reverse variance (fixed, learned, optimal)
    "ddim"        x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - s_t^2) eps_hat + s_t z,
                  s_t = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s)       [SME21, Eq. 12, 16]
                  (eta = 0 deterministic; eta = 1 is the ancestral step with the fixed_small variance)
    "euler"       Euler's method on the probability-flow ODE d(x / sqrt(ab)) = eps_hat d sigma
                  [Ka22, Eq. 4 with s = 1 after scaling; SME21, Eq. 14]: the same map as DDIM with eta = 0
    "heun"        Heun's second-order method on the same ODE: an Euler step to s, the slope there, and
                  the step again with the mean of both slopes; Euler on the last step (sigma_0 = 0) [Ka22, Alg. 1]
    "dpm_solver"  DPM-Solver++(2M), the exact data-prediction integral with x0_hat linear in lambda over
                  the last two steps: h = lambda_s - lambda_t, r = h_prev / h,
                  x_s = sqrt((1 - ab_s) / (1 - ab_t)) x_t - sqrt(ab_s) (e^{-h} - 1) D,
                  D = (1 + 1 / (2 r)) x0_hat_t - 1 / (2 r) x0_hat_prev (first order: D = x0_hat_t) [Lu22b, Alg. 2]

Every sampler calls the network once per step (NFE = K), except Heun (NFE = 2K - 1). Samplers by
default skip the steps whose half log-SNR is below `DPM_SOLVER_LAMBDA_MIN` (-5.1): at the cosine
schedule's clipped last step x0_hat = (x_T - sqrt(1 - ab_T) eps_hat) / sqrt(ab_T) multiplies the
network's error by 1 / sqrt(ab_T) = 2e4, which an ODE solver carries to the end, and which a few large
ancestral steps carry far. Algorithm 2 on every step is kept as published and starts at T: its small
steps and fresh noise wash the error out.
"""

import math
from dataclasses import dataclass

import torch

from .devices import model_device
from .files import progress_bar
from .guidance import guided
from .posterior import PREDICTIONS, convert_prediction
from .respacing import DPM_SOLVER_LAMBDA_MIN, SPACINGS, respaced_schedule, select_timesteps
from .reverse import check_variance, p_mean_variance, reverse_variance, split_output

SAMPLERS = ("ancestral", "ddim", "euler", "heun", "dpm_solver")
# each sampler's step selection when steps are given: the one its paper uses
DEFAULT_SPACING = {"ancestral": "uniform", "ddim": "uniform", "euler": "edm", "heun": "edm", "dpm_solver": "log_snr"}


@dataclass
class SamplingPlan:
    """Where a sampler calls the network: timesteps t_K > ... > t_1 (decreasing), and how many calls."""

    sampler: str
    timesteps: list  # decreasing ints; sampling starts at x_{timesteps[0]} ~ N(0, I) and ends at x_0
    spacing: str
    lambda_min: float  # the half log-SNR cut-off of the start (None: T)
    nfe: int  # network evaluations: len(timesteps), or 2 len(timesteps) - 1 for Heun


def sampling_plan(sched, sampler="ancestral", steps=None, spacing=None, lambda_min="auto"):
    """The timesteps and NFE of `sampler` with `steps` network-call steps (None: every step) on `sched`.

    spacing None takes the sampler's `DEFAULT_SPACING`; lambda_min "auto" keeps Algorithm 2 (ancestral, every
    step) as published, from T, and starts every other plan at the last step with half log-SNR >=
    DPM_SOLVER_LAMBDA_MIN; None starts at T.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    spacing = DEFAULT_SPACING[sampler] if spacing is None else spacing
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    if lambda_min == "auto":
        lambda_min = None if sampler == "ancestral" and steps is None else DPM_SOLVER_LAMBDA_MIN
    kept = select_timesteps(sched, steps, spacing, lambda_min)
    nfe = 2 * len(kept) - 1 if sampler == "heun" else len(kept)
    return SamplingPlan(sampler=sampler, timesteps=kept[::-1], spacing=spacing, lambda_min=lambda_min, nfe=nfe)


@dataclass
class StepCoefficients:
    """Per-t Python floats, index t = 1..T (slot 0 unused): mean = a[t] x_t + b[t] output."""

    a: list
    b: list
    std: list  # sigma_t for a fixed variance
    log_small: list  # log beta_tilde_t (clipped), the learned variance's lower end
    log_large: list  # log beta_t, its upper end


def step_coefficients(sched, prediction="eps", var="fixed_small", variances=None):
    """The ancestral step's coefficients for every t, taken from `p_mean_variance` (float64)."""
    check_variance(var, variances)
    T = sched.T
    t = torch.arange(1, T + 1)
    zero, one = torch.zeros(T, 1, dtype=torch.float64), torch.ones(T, 1, dtype=torch.float64)
    a = p_mean_variance(sched, one, t, zero, prediction).mean  # mean at x_t = 1, output = 0
    b = p_mean_variance(sched, zero, t, one, prediction).mean  # mean at x_t = 0, output = 1
    fixed = var if var in ("fixed_large", "optimal") else "fixed_small"
    _, log_var = reverse_variance(sched, t, zero, fixed, variances=variances)
    _, log_small = reverse_variance(sched, t, zero, "learned", var_interp=zero)
    _, log_large = reverse_variance(sched, t, zero, "learned", var_interp=one)
    return StepCoefficients(a=_pad(a), b=_pad(b), std=_pad((0.5 * log_var).exp()),
                            log_small=_pad(log_small), log_large=_pad(log_large))


def _pad(x):
    return [0.0] + x.reshape(-1).tolist()


def _respaced_variances(sched, new, kept, variances):
    """Optimal variances on a respaced schedule: beta_tilde'_k + c'_k^2 E||x_0 - x0_hat||^2 / D, c = coef_x0.

    The network's x_0 error at t = kept[k] is recovered from the full schedule's (var_t - beta_tilde_t) / c_t^2
    [Bao22, Sec. 4: the same estimate serves any trajectory].
    """
    kept = torch.as_tensor(kept)
    variances = torch.as_tensor(variances, dtype=torch.float64)
    x0_mse = (variances[kept] - sched.beta_tilde[kept]) / sched.posterior_coef_x0[kept] ** 2
    out = torch.ones(new.T + 1, dtype=torch.float64)
    out[1:] = new.beta_tilde[1:] + new.posterior_coef_x0[1:] ** 2 * x0_mse
    return out


def _prediction_coefficients(sched, prediction):
    """Per-t lists (x0_a, x0_b, eps_a, eps_b): x0_hat = x0_a[t] x_t + x0_b[t] output, eps_hat likewise."""
    T = sched.T
    t = torch.arange(1, T + 1)
    zero, one = torch.zeros(T, 1, dtype=torch.float64), torch.ones(T, 1, dtype=torch.float64)
    eps_a, x0_a, _ = convert_prediction(sched, one, t, zero, prediction)  # at x_t = 1, output = 0
    eps_b, x0_b, _ = convert_prediction(sched, zero, t, one, prediction)  # at x_t = 0, output = 1
    return _pad(x0_a), _pad(x0_b), _pad(eps_a), _pad(eps_b)


class _Network:
    """The model's output at (x_t, t), counted, and its x0_hat and eps_hat as affine maps of (x_t, output)."""

    def __init__(self, sched, model, n, prediction, var, device=None):
        self.x0_a, self.x0_b, self.eps_a, self.eps_b = _prediction_coefficients(sched, prediction)
        self.model, self.var, self.calls = model, var, 0
        self.t_batch = torch.empty(n, dtype=torch.int64, device=device)

    def __call__(self, x, t):
        """(output, var_interp) of the model at (x, t); var_interp is the learned variance's r, or None."""
        self.calls += 1
        return split_output(self.model(x, self.t_batch.fill_(t)), self.var)

    def x0_eps(self, x, t):
        """(x0_hat, eps_hat) at (x, t)."""
        out, _ = self(x, t)
        return out * self.x0_b[t] + x * self.x0_a[t], out * self.eps_b[t] + x * self.eps_a[t]


class _Ancestral:
    """Algorithm 2 on the visited steps, with the variance of `reverse.reverse_variance` [Ho20; ND21, Sec. 4]."""

    def __init__(self, sched, timesteps, prediction, var, variances, eta):
        if eta is not None:
            raise ValueError('eta is a parameter of sampler="ddim" (eta = 1 is the ancestral step)')
        kept = timesteps[::-1]
        if kept == list(range(1, sched.T + 1)):
            self.index = {t: t for t in kept}  # every step: the schedule itself, unchanged
            coef_sched = sched
        else:
            coef_sched = respaced_schedule(sched, kept)
            self.index = {t: k for k, t in enumerate(kept, start=1)}
            if var == "optimal":  # sample_loop has checked that variances are given
                variances = _respaced_variances(sched, coef_sched, kept, variances)
        if coef_sched is sched:
            self.coef = step_coefficients(sched, prediction, var, variances)
        else:
            # the network's output means x0_hat at its own t (a mu output is the mean of the *original* step):
            # the respaced mean is the respaced posterior mean a'_k x_t + b'_k x0_hat [Ho20, Eq. 7]
            self.coef = step_coefficients(coef_sched, "x0", var, variances)
            x0_a, x0_b, _, _ = _prediction_coefficients(sched, prediction)
            for k, t in enumerate(kept, start=1):
                self.coef.a[k], self.coef.b[k] = self.coef.a[k] + self.coef.b[k] * x0_a[t], self.coef.b[k] * x0_b[t]
        self.learned = var == "learned"

    def step(self, net, x, t, s, noise):
        out, r = net(x, t)
        k, coef = self.index[t], self.coef
        mean = out * coef.b[k] + x * coef.a[k] if coef.a[k] != 0.0 else out * coef.b[k]
        if s == 0:
            return mean  # no noise at the last step [Ho20, Alg. 2]
        z = noise(x)
        if self.learned:
            # log sigma_t^2 = r log beta_t + (1 - r) log beta_tilde_t   [ND21, Eq. 15]
            log_var = coef.log_small[k] + r * (coef.log_large[k] - coef.log_small[k])
            return mean + (0.5 * log_var).exp() * z
        return torch.add(mean, z, alpha=coef.std[k])


class _DDIM:
    """x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - s_t^2) eps_hat + s_t z [SME21, Eq. 12, 16]."""

    def __init__(self, sched, timesteps, prediction, var, variances, eta):
        eta = 0.0 if eta is None else eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"eta must be a number in [0, 1] (0 = deterministic DDIM, 1 = DDPM), got {eta!r}")
        self.ab, self.eta = sched.alpha_bar.tolist(), float(eta)

    def coefficients(self, t, s):
        """(sqrt(ab_s), sqrt(1 - ab_s - s_t^2), s_t) for the step from t to s."""
        ab_t, ab_s = self.ab[t], self.ab[s]
        sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        # 1 - ab_s - sigma^2 >= 0 exactly (it is (1 - ab_s)^2 alpha_t / (1 - ab_t) at eta = 1); clamp rounding
        return math.sqrt(ab_s), math.sqrt(max(1 - ab_s - sigma ** 2, 0.0)), sigma

    def step(self, net, x, t, s, noise):
        x0, eps = net.x0_eps(x, t)
        data, direction, sigma = self.coefficients(t, s)
        x = x0 * data + eps * direction if direction > 0 else x0 * data
        return torch.add(x, noise(x), alpha=sigma) if sigma > 0 else x


class _ODE:
    """Shared by the probability-flow ODE solvers: sigma_t = sqrt((1 - ab_t) / ab_t) and sqrt(ab_t)."""

    def __init__(self, sched, timesteps, prediction, var, variances, eta):
        if eta is not None:
            raise ValueError('eta is a parameter of sampler="ddim"; the ODE samplers are deterministic')
        ab = sched.alpha_bar
        self.sigma = ((1 - ab) / ab).sqrt().tolist()  # sigma_0 = 0
        self.scale = ab.sqrt().tolist()  # x_t = sqrt(ab_t) (x_0 + sigma_t eps): the VE variable is x / scale
        self.lam = (-((1 - ab) / ab).sqrt().log()).tolist()  # lambda_t, +inf at t = 0


class _Euler(_ODE):
    """One Euler step in (x / sqrt(ab), sigma): d(x / sqrt(ab)) / d sigma = eps_hat [Ka22, Eq. 4; SME21, Eq. 14]."""

    def step(self, net, x, t, s, noise):
        _, eps = net.x0_eps(x, t)
        y = x / self.scale[t] + (self.sigma[s] - self.sigma[t]) * eps
        return y * self.scale[s]


class _Heun(_ODE):
    """Heun's method on the same ODE [Ka22, Alg. 1]: a second slope at s, except on the last step (sigma_0 = 0)."""

    def step(self, net, x, t, s, noise):
        _, eps = net.x0_eps(x, t)
        y, h = x / self.scale[t], self.sigma[s] - self.sigma[t]
        y_euler = y + h * eps
        if s == 0:
            return y_euler
        _, eps_s = net.x0_eps(y_euler * self.scale[s], s)
        return (y + h * 0.5 * (eps + eps_s)) * self.scale[s]


class _DPMSolver(_ODE):
    """DPM-Solver++(2M) [Lu22b, Alg. 2]: multistep, second order from the second step, first order on the last."""

    def __init__(self, *args):
        super().__init__(*args)
        self.previous = None  # (x0_hat, h) of the previous step

    def step(self, net, x, t, s, noise):
        x0, _ = net.x0_eps(x, t)
        if s == 0:
            return x0  # lambda_0 = inf: the exact solution of the first-order step is x0_hat
        h = self.lam[s] - self.lam[t]
        d = x0
        if self.previous is not None:
            x0_prev, h_prev = self.previous
            r = h_prev / h
            d = x0 * (1 + 1 / (2 * r)) - x0_prev * (1 / (2 * r))
        self.previous = (x0, h)
        # sigma_s / sigma_t in the VP sense is sqrt((1 - ab_s) / (1 - ab_t)); -alpha_s (e^{-h} - 1) = sqrt(ab_s) (1 - e^{-h})
        ratio = math.sqrt((1 - self.scale[s] ** 2) / (1 - self.scale[t] ** 2))  # finite at zero SNR too
        return x * ratio + d * (self.scale[s] * -math.expm1(-h))


_STEPPERS = {"ancestral": _Ancestral, "ddim": _DDIM, "euler": _Euler, "heun": _Heun, "dpm_solver": _DPMSolver}


def sample_loop(sched, model, n, prediction="eps", var="fixed_small", generator=None, *, data_shape=(2,),
                x_T=None, progress=False, variances=None, sampler="ancestral", steps=None, spacing=None, eta=None,
                lambda_min="auto", label=None, guidance=0.0):
    """Every sampler as one generator: yields (t, x_t) for the visited t = t_K, ..., t_1 and finally (0, x_0).

    Args: model a callable model(xt, t) (see `reverse.model_step`); n the number of samples; prediction one of
    PREDICTIONS; var the reverse variance of the ancestral sampler (VARIANCES; the others ignore a
    learned variance's var_interp); generator a torch.Generator for x_{t_K} and every z (same state, same samples);
    x_T optional start (n, *data_shape); variances the (T + 1,) per-t variances for var="optimal";
    sampler one of SAMPLERS; steps the number of visited steps (None: every step); spacing one of
    respacing.SPACINGS (None: the sampler's default); eta DDIM's noise in [0, 1]; lambda_min see `sampling_plan`;
    label a class (int, or (n,) labels) for a class-conditional network, sampled with classifier-free guidance of
    weight `guidance` (0: the conditional model; see `guidance.guided`); no label: the unconditional (null) path.
    With steps=None and the defaults this is Algorithm 2 [Ho20], draw for draw.
    Yields: (t, x_t) with x_t a float32 (n, *data_shape) tensor in model coordinates on the model's device
    (`model_device`; the noise is drawn on the CPU and moved, so a seed gives the same samples everywhere),
    created under torch.inference_mode (no autograd).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    check_variance(var, variances)
    if label is not None:
        model = guided(model, label, guidance)
    elif guidance:
        raise ValueError("guidance steers towards a class: give a label as well")
    plan = sampling_plan(sched, sampler, steps, spacing, lambda_min)
    if sched.alpha_bar[plan.timesteps[0]] == 0:  # zero terminal SNR [Lin24]: x_T carries no signal at all
        if prediction == "eps":
            raise ValueError("at zero terminal SNR an eps-network's x_0 = (x_T - eps) / sqrt(alpha_bar_T) divides "
                             "by zero: train with prediction 'v', or start below T with lambda_min")
        if sampler in ("euler", "heun"):
            raise ValueError(f"{sampler} works on x / sqrt(alpha_bar), infinite at zero terminal SNR: start below T "
                             "with lambda_min, or use ancestral, ddim or dpm_solver")
    stepper = _STEPPERS[sampler](sched, plan.timesteps, prediction, var, variances, eta)
    device = model_device(model)
    net = _Network(sched, model, n, prediction, var, device)
    pairs = progress_bar(list(zip(plan.timesteps, plan.timesteps[1:] + [0])), progress,
                         f"sampling ({sampler}, {plan.nfe} NFE)")

    def noise(x):  # drawn on the CPU from the generator and moved: the same samples on every device
        return torch.randn(x.shape, generator=generator).to(device)

    with torch.inference_mode():
        x = (torch.randn((n, *data_shape), generator=generator) if x_T is None else x_T.float()).to(device)
        yield plan.timesteps[0], x
        for t, s in pairs:
            x = stepper.step(net, x, t, s, noise)
            yield s, x
    assert net.calls == plan.nfe, (net.calls, plan.nfe)


def sample(sched, model, n, prediction="eps", var="fixed_small", generator=None, *, data_shape=(2,),
           progress=False, variances=None, x_T=None, **sampler_args):
    """x_0 from `sample_loop` (Algorithm 2 by default): a float32 (n, *data_shape) tensor in model coordinates.

    sampler_args: sampler, steps, spacing, eta, lambda_min, label, guidance (see `sample_loop`).
    """
    for _, x in sample_loop(sched, model, n, prediction, var, generator, data_shape=data_shape, x_T=x_T,
                            progress=progress, variances=variances, **sampler_args):
        pass
    return x


def sample_data(sched, model, scaling, n, prediction="eps", var="fixed_small", generator=None, *,
                progress=False, data_shape=(2,), variances=None, x_T=None, **sampler_args):
    """n samples mapped back to raw data coordinates with `scaling.to_data`: float64 (n, *data_shape), on the CPU."""
    x0 = sample(sched, model, n, prediction, var, generator, data_shape=data_shape, progress=progress,
                variances=variances, x_T=x_T, **sampler_args)
    return scaling.to_data(x0.cpu().double())


def ddim_invert(sched, model, x0, prediction="eps", steps=None, spacing=None, lambda_min="auto", var="fixed_small"):
    """Deterministic DDIM run backwards: x_0 -> x_{t_K}, the start from which DDIM (eta = 0) returns to x_0.

    x_t = sqrt(ab_t) x0_hat + sqrt(1 - ab_t) eps_hat with the network evaluated at the previous, less noisy
    point [SME21, Sec. 5.4; Eq. 14 integrated the other way]; the first step uses the network at t_1 on x_0.
    Same plan arguments as `sampling_plan(sched, "ddim", ...)`. Returns float32 x_{t_K} (B, ...).
    """
    plan = sampling_plan(sched, "ddim", steps, spacing, lambda_min)
    net = _Network(sched, model, x0.shape[0], prediction, var, x0.device)
    ab = sched.alpha_bar.tolist()
    up = plan.timesteps[::-1]
    with torch.inference_mode():
        x = x0.float()
        for s, t in zip([up[0]] + up[:-1], up):
            x0_hat, eps_hat = net.x0_eps(x, s)
            x = x0_hat * math.sqrt(ab[t]) + eps_hat * math.sqrt(1 - ab[t])
    return x
