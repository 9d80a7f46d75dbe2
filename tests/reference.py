"""Reference formulas for the tests, written again from the papers in plain Python floats.

Nothing here imports diffusion_lib, so a test that compares the library with these functions checks
one implementation against another. Lists are indexed like the library: entry t is the paper's t,
entry 0 is padding.

References: [Ho20] Ho, Jain, Abbeel 2020; [ND21] Nichol & Dhariwal 2021; [Lu22b] DPM-Solver++; [Ka22] EDM.
"""

import math

import numpy as np

# the numbers of steps every schedule is tested with
SIZES = (10, 100, 1000)


def alpha_bar(betas):
    """[1, alpha_bar_1, ..., alpha_bar_T] from [beta_1, ..., beta_T]: a running product of 1 - beta_s."""
    out = [1.0]
    for beta in betas:
        out.append(out[-1] * (1.0 - beta))
    return out


def beta_tilde(betas):
    """[nan, beta_tilde_1, ..., beta_tilde_T], beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t [Ho20, Eq. 7]."""
    ab = alpha_bar(betas)
    return [math.nan] + [(1 - ab[t - 1]) / (1 - ab[t]) * betas[t - 1] for t in range(1, len(betas) + 1)]


def reverse_var(betas, t, var):
    """sigma_t^2 of the reverse step p(x_{t-1} | x_t).

    "fixed_large": beta_t. "fixed_small": beta_tilde_t, except at t = 1 where beta_tilde_1 = 0 and the
    convention (improved-diffusion's `posterior_log_variance_clipped`) is beta_tilde_2.
    """
    if var == "fixed_large":
        return betas[t - 1]
    bt = beta_tilde(betas)
    return bt[2] if t == 1 else bt[t]


def cosine_f(t, T, s=0.008):
    """f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), so that alpha_bar(t) = f(t) / f(0) [ND21, Eq. 17]."""
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


def improved_diffusion_cosine_betas(T, max_beta=0.999):
    """The loop of improved-diffusion's `betas_for_alpha_bar` (gaussian_diffusion.py), 0-based i = t - 1:

        for i in range(T): t1, t2 = i / T, (i + 1) / T; betas.append(min(1 - abar(t2) / abar(t1), max_beta))

    with abar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2 (not divided by f(0): only ratios enter).
    """
    def abar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)]


def gaussian_expected_bound(betas, data_var, num_dims, var):
    """E[L_T + sum_{t>=2} L_{t-1} + L_0] in nats for data x_0 ~ N(0, s^2 I), s^2 = data_var, and the
    exact reverse mean mu(x_t) = E[x_{t-1} | x_t] (what an exact eps-predictor gives).

    Per coordinate, with v_t = Var(x_t) = abar_t s^2 + 1 - abar_t and c_t = sqrt(abar_{t-1}) beta_t /
    (1 - abar_t) the x_0 coefficient of mu_tilde_t [Ho20, Eq. 7]:
      mu_tilde_t - E[mu_tilde_t | x_t] = c_t (x_0 - E[x_0 | x_t]), so E[(mu_tilde - mu)^2] = c_t^2 r_t
      with r_t = Var(x_0 | x_t) = s^2 (1 - abar_t) / v_t (Gaussian conditioning).
      t >= 2: E[KL(N(mu_tilde, bt_t) || N(mu, sigma_t^2))]
              = 1/2 (log(sigma_t^2 / bt_t) + (bt_t + c_t^2 r_t) / sigma_t^2 - 1)
      t = 1:  E[-log N(x_0; mu, sigma_1^2)] = 1/2 (log(2 pi sigma_1^2) + r_1 / sigma_1^2)   (c_1 = 1)
      L_T:    E[KL(N(sqrt(abar_T) x_0, 1 - abar_T) || N(0, 1))] = 1/2 (abar_T s^2 - abar_T - log(1 - abar_T))
    """
    ab = alpha_bar(betas)
    bt = beta_tilde(betas)
    T = len(betas)
    total = 0.5 * (ab[T] * data_var - ab[T] - math.log(1 - ab[T]))
    for t in range(1, T + 1):
        r = data_var * (1 - ab[t]) / (ab[t] * data_var + 1 - ab[t])
        c = math.sqrt(ab[t - 1]) * betas[t - 1] / (1 - ab[t])
        variance = reverse_var(betas, t, var)
        if t == 1:
            total += 0.5 * (math.log(2 * math.pi * variance) + r / variance)
        else:
            total += 0.5 * (math.log(variance / bt[t]) + (bt[t] + c ** 2 * r) / variance - 1)
    return num_dims * total


def dpm_solver_pp_2m(alpha_bar, timesteps, x_T, x0_model):
    """DPM-Solver++(2M) transcribed from [Lu22b, Alg. 2] in float64 numpy: alpha_t = sqrt(ab), sigma_t = sqrt(1 - ab),
    lambda_t = log(alpha_t / sigma_t); timesteps t_0 > t_1 > ... > t_M >= 1 (the paper's order); the final
    denoising x_0 = x_theta(x_{t_M}, t_M) (lambda_0 = inf). x0_model(x, t) -> data prediction (numpy)."""
    ab = np.asarray(alpha_bar, dtype=np.float64)[1:]  # t = 1..T: slot 0 (ab = 1) has lambda = inf
    ab = np.concatenate([[np.nan], ab])
    alpha, sigma = np.sqrt(ab), np.sqrt(1 - ab)
    lam = np.log(alpha) - np.log(sigma)
    x = np.asarray(x_T, dtype=np.float64)
    ts = list(timesteps)
    prev = x0_model(x, ts[0])
    if len(ts) > 1:
        h = lam[ts[1]] - lam[ts[0]]
        x = sigma[ts[1]] / sigma[ts[0]] * x - alpha[ts[1]] * (np.exp(-h) - 1) * prev
    for i in range(2, len(ts)):
        h_prev, h = lam[ts[i - 1]] - lam[ts[i - 2]], lam[ts[i]] - lam[ts[i - 1]]
        r = h_prev / h
        cur = x0_model(x, ts[i - 1])
        D = (1 + 1 / (2 * r)) * cur - 1 / (2 * r) * prev
        x = sigma[ts[i]] / sigma[ts[i - 1]] * x - alpha[ts[i]] * (np.exp(-h) - 1) * D
        prev = cur
    return x0_model(x, ts[-1])


def edm_heun(alpha_bar, timesteps, x_T, x0_model):
    """[Ka22, Alg. 1] (deterministic Heun) transcribed in float64 numpy on the VE variable x / sqrt(ab), with
    sigma_i = sqrt((1 - ab) / ab) at the given decreasing timesteps and sigma_N = 0; D(x; sigma_i) =
    x0_model(sqrt(ab) x, t_i). Returns x_N = x_0."""
    ab = np.asarray(alpha_bar, dtype=np.float64)
    ts = list(timesteps)
    sig = [np.sqrt((1 - ab[t]) / ab[t]) for t in ts] + [0.0]

    def D(x, i):
        return x0_model(np.sqrt(ab[ts[i]]) * x, ts[i])

    x = np.asarray(x_T, dtype=np.float64) / np.sqrt(ab[ts[0]])
    for i in range(len(ts)):
        d = (x - D(x, i)) / sig[i]
        x_next = x + (sig[i + 1] - sig[i]) * d
        if sig[i + 1] != 0:
            d_next = (x_next - D(x_next, i + 1)) / sig[i + 1]
            x_next = x + (sig[i + 1] - sig[i]) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x
