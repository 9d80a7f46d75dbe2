"""diffusion_lib: denoising diffusion probabilistic models, derived, coded once and checked.

    import diffusion_lib as dl
    sched = dl.make_schedule("cosine", 1000)
    xt = dl.q_sample(sched, x0, t, eps)

Timesteps are the paper's t = 1..T everywhere; x_0 is data. See README.md for the references
([Ho20], [ND21], ...) cited in the docstrings.
"""

from .roll import TAU_RANGE, roll_curve, swiss_roll, swiss_roll_scaling
from .scaling import AffineScaling
from .diagnostics import PriorSummary, first_step_below, prior_table, summarize_prior
from .forward import q_chain, q_marginal, q_sample, q_step
from .likelihood import (
    DECODERS,
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
    prior_kl,
    simple_loss_weight,
    sum_flat,
    vlb_term,
)
from .metrics import TwoSampleResult, energy_distance, two_sample_test
from .posterior import (
    PREDICTIONS,
    convert_prediction,
    eps_from_v,
    eps_from_x0,
    mu_from_eps,
    mu_from_x0,
    prediction_target,
    q_posterior,
    v_from_eps_x0,
    x0_from_eps,
    x0_from_mu,
    x0_from_v,
)
from .reverse import VARIANCES, ReverseStep, model_step, p_mean_variance, reverse_variance
from .schedules import (SCHEDULES, NoiseSchedule, ScheduleWarning, cosine_log_snr_betas, log_snr_range_for_levels,
                        make_schedule, rescale_zero_terminal_snr)
from .vlb import (
    BoundTerms,
    bound_terms,
    gaussian_bound_exact,
    gaussian_data_denoiser,
    gaussian_entropy,
    gaussian_optimal_variance,
)
# the reverse process: models, training (Algorithm 1), sampling (Algorithm 2), evaluation
from .checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .devices import DEVICES, model_device, resolve_device
from .data_registry import DATASETS, DataSet, get_data_set, pool_seed, register_data_set
from .roll_density import nearest_on_roll, swiss_roll_entropy, swiss_roll_log_density
from .evaluation import (
    NLLBound,
    coverage_tv,
    nll_bound,
    on_roll_fraction,
    paired_difference,
    sample_metrics,
    sliced_wasserstein,
    sw_ratio_se,
)
from .optimal_variance import OptimalVariance, optimal_variance
from .losses import LOSSES, TimestepSampler, training_losses
from .models import MLP, timestep_embedding
from .sampling import (
    SAMPLERS,
    SamplingPlan,
    ddim_invert,
    sample,
    sample_data,
    sample_loop,
    sampling_plan,
    step_coefficients,
)
from .training import NonFiniteLossError, TrainConfig, Trainer, TrainRecord, default_variance
from .scorecard import Evaluation, evaluate, variances_for
# the optimal denoiser and the floor of the loss; which steps fast samplers visit
from .optimal import (
    IrreducibleLoss,
    irreducible_simple_loss,
    memorising_denoiser,
    memorising_x0,
    optimal_denoiser,
    optimal_eps,
    optimal_x0,
)
from .memorisation import CopyTest, FixedTrainingSet, copy_test, nearest_distances
from .clipping import clip_x0_denoiser
from .exact_likelihood import DIVERGENCES, ODENLL, alpha_bar_at, ode_nll, score_from_eps
from .respacing import (
    DPM_SOLVER_LAMBDA_MIN,
    SPACINGS,
    Respaced,
    half_log_snr,
    respace,
    respaced_schedule,
    select_timesteps,
    space_timesteps,
)

# images: the 8x8 digits, a small U-Net, and a classifier to judge generated digits
from .digits import DIGIT_LEVELS, Digits, digits_scaling, independent_pixel_nll, load_digits, quantize
from .unet import UNet
from .guidance import Guided, guided
from .digit_quality import DigitQuality, classifier_accuracy, digit_quality, frechet_distance, train_classifier

__version__ = "0.1.0"


def __getattr__(name):
    # `dl.plotting` (and `dl.explorer`) are imported on first use, so the CLI and the tests do not pay
    # for matplotlib; `dl.exercises` holds the check_* helpers for notebooks/exercises/
    if name in ("plotting", "explorer", "exercises"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'diffusion_lib' has no attribute {name!r}")
