"""Self-checking exercises: a friendly pass/fail with a hint that gives away a little more each time.

Each ``check_*`` function takes the learner's function, runs it on inputs
where the library's answer is known, and returns a ``CheckResult``. Shown as a
cell's last value, it renders as a green "Correct!" or an orange "Not yet"
box. ``bool(result)`` tells whether the check passed, for tests.

A solution not written yet (the student version's ``raise NotImplementedError()``)
gets "Not yet" too, with the task restated, so a student notebook runs top to bottom.

Feedback escalates (a ``Guide`` per exercise): the first "Not yet" gives a conceptual nudge, each
further one a more specific hint (the idea, then the formula in mathematics), never code;
``checks.hint("name")`` asks for the next hint without re-running, ``checks.solution("name")``
prints code. The learner's function gets copies of its inputs, and an exception inside the
checker is reported as the checker's, never as the learner's mistake.

Every check has the same shape on purpose (is it a function? run it on fixed inputs, name the
usual mistakes, then compare with the library): a deliberate parallel, one per exercise, that a
duplicate-code finder reports as lines of the same shape.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import split_heads as library_split_heads
from .clip import contrastive_loss
from .ddpm import noise_prediction_loss
from .flow import FlowMatchEulerDiscreteScheduler, velocity_loss
from .ldm import guided_noise
from .ldm import img2img_timesteps as library_img2img_timesteps
from .schedule import NoiseSchedule, cosine_beta_schedule
from .vae import kl_divergence
from .vae import reparameterize as library_reparameterize

NOT_WRITTEN = "your function still raises NotImplementedError: replace `raise NotImplementedError()` with your code."


@dataclass(frozen=True)
class Guide:
    """What a learner is told, in order of how much it gives away.

    task: the signature, shapes, dtypes and return type (shown with the untouched stub).
    hints: escalating, one more per failed check: a conceptual nudge, then the idea, then the formula in
        mathematics; never code.
    solution: code, shown only when asked for (``solution(exercise)``) or in the instructor's notebook.
    """

    task: str
    hints: tuple[str, ...]
    solution: str


GUIDES: dict[str, Guide] = {}       # exercise name -> its guide, filled as each check runs
_not_yet: dict[str, int] = {}       # exercise name -> how many "Not yet"s (and hints) it has had


@dataclass
class CheckResult:
    """The outcome of one exercise check."""

    exercise: str
    passed: bool
    message: str
    hint: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"✅ Correct! {self.exercise}: {self.message}"
        return f"❌ Not yet: {self.exercise}: {self.message}" + (f"\n   Hint: {self.hint}" if self.hint else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour, label = ("#e6f4ea", "✅ Correct!") if self.passed else ("#fff4e5", "❌ Not yet")
        hint = "" if self.passed or not self.hint else f"<br><b>Hint:</b> {html.escape(self.hint)}"
        return (f'<div style="background:{colour};padding:8px 12px;border-radius:6px;color:#222">'
                f"<b>{label}</b> {html.escape(self.exercise)}: {html.escape(self.message)}{hint}</div>")


class _StudentError(Exception):
    """An exception raised inside the learner's function (as opposed to inside the checker)."""


def _student(fn):
    """The learner's function, wrapped: it gets copies of tensor inputs (an answer that works in place cannot
    change what the checker compares with) and its exceptions are marked as the learner's."""
    if not callable(fn):
        return fn                     # _callable_problem explains

    def call(*args, **kwargs):
        copy = lambda a: a.clone() if isinstance(a, torch.Tensor) else a    # noqa: E731
        try:
            return fn(*map(copy, args), **{k: copy(v) for k, v in kwargs.items()})
        except Exception as err:  # noqa: BLE001 -- any failure of the learner's code is reported as theirs
            raise _StudentError(err) from err

    return call


def _next_hint(exercise: str, guide: Guide) -> str:
    """The next hint of the ladder (the last one again once all are given)."""
    level = _not_yet.get(exercise, 0)
    _not_yet[exercise] = level + 1
    hint = guide.hints[min(level, len(guide.hints) - 1)]
    if level + 1 >= len(guide.hints):
        hint += f' (That is the last hint; checks.solution("{exercise}") shows code.)'
    return hint


def run_check(exercise: str, attempt, guide: Guide, success: str) -> CheckResult:
    """Run ``attempt()``, which returns None when all is well or a string saying what is wrong.

    The untouched stub gets the task and the first hint; each further "Not yet" the next, more specific hint.
    An exception from the learner's code becomes a "Not yet" with its type and message; one from the checker
    itself is reported as the checker's fault.
    """
    GUIDES[exercise] = guide
    try:
        problem = attempt()
    except _StudentError as wrapped:
        err = wrapped.__cause__
        if isinstance(err, NotImplementedError):
            return CheckResult(exercise, False, f"{NOT_WRITTEN} The task: {guide.task}", _next_hint(exercise, guide))
        return CheckResult(exercise, False, f"your code raised {type(err).__name__}: {err}",
                           _next_hint(exercise, guide))
    except Exception as err:  # noqa: BLE001 -- a bug in this module must not be blamed on the learner
        return CheckResult(exercise, False, f"the checker itself failed ({type(err).__name__}: {err}). This is a "
                           "bug in course_lib.checks, not a mistake in your answer; please report it.")
    if problem:
        return CheckResult(exercise, False, problem, _next_hint(exercise, guide))
    _not_yet.pop(exercise, None)
    return CheckResult(exercise, True, success)


def _known(exercise: str) -> Guide:
    if exercise not in GUIDES:
        known = ", ".join(map(repr, GUIDES)) or "none yet"
        raise ValueError(f"no exercise {exercise!r} has been checked in this session (checked so far: {known}); "
                         "run its check cell first, then ask again")
    return GUIDES[exercise]


def hint(exercise: str) -> None:
    """Print the next hint for ``exercise`` (its name as the check prints it), without running the check again."""
    print(_next_hint(exercise, _known(exercise)))


def solution(exercise: str) -> None:
    """Print code that solves ``exercise``. Try the hints first: the point is to write it yourself."""
    print(_known(exercise).solution)


def _callable_problem(fn, example: str) -> str | None:
    if not callable(fn):
        return f"pass your function itself, not its result: {example}"
    return None


def _as_tensor(value):
    """A learner's answer as a tensor: Python and numpy numbers and arrays are fine answers too."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) or type(value).__module__ == "numpy":
        return torch.as_tensor(value)
    return value


def _close(got, expected: torch.Tensor, atol: float) -> bool:
    """Whether ``got`` matches ``expected`` within ``atol``, whatever their dtypes (float32, float64, numbers)."""
    got = _as_tensor(got)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return False
    diff = (got.double() - expected.double()).abs()
    return bool(torch.isfinite(diff).all()) and (not diff.numel() or diff.max().item() <= atol)


def _compare(got, expected: torch.Tensor, what: str, atol: float) -> str | None:
    got = _as_tensor(got)
    if not isinstance(got, torch.Tensor):
        return f"{what} should be a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if atol > 0 and got.is_floating_point() and got.dtype != torch.float64:
        # single precision cannot match to better than its rounding: allow for it, relative to the values' size
        atol = max(atol, 1e-4 * max(1.0, expected.abs().max().item()))
    diff = (got.double() - expected.double()).abs()
    if not torch.isfinite(diff).all():
        return f"{what} contains NaN or infinite values"
    if diff.numel() and diff.max() > atol:
        return f"{what} differs from the expected values (largest difference {diff.max().item():.3g})"
    return None


def _clean_and_noise(seed: int, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed test inputs: stand-in images x0 (batch, 1, 28, 28) uniform in [-1, 1], and Gaussian noise like them."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 28, 28, generator=g) * 2 - 1, torch.randn(batch, 1, 28, 28, generator=g)


# --- notebook 01 -----------------------------------------------------------------

def check_q_sample(q_sample) -> CheckResult:
    """Exercise: ``q_sample(x0, t, noise, alphas_cumprod) -> x_t``, the closed-form forward process.

    x0, noise: (B, 1, 28, 28); t: (B,) int64; alphas_cumprod: (T,).
    """
    exercise = "q_sample"
    q_sample = _student(q_sample)
    guide = Guide(
        task=("q_sample(x0, t, noise, alphas_cumprod) returns x_t, a tensor shaped like x0 (B, 1, 28, 28); "
              "t is a (B,) int64 tensor, one timestep per image; alphas_cumprod is the (T,) tensor of alpha-bars."),
        hints=("Jumping straight to step t needs two numbers per image: how much of the clean image survives "
               "at t, and how much noise has joined it.",
               "alphas_cumprod[t] is the share of the *variance* that is still signal, so the amplitudes are "
               "its square root and the square root of what is left. Each image has its own t: its factor must "
               "broadcast over its (1, 28, 28) pixels.",
               "x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, where ᾱ_t = alphas_cumprod[t] takes the shape (B, 1, 1, 1)."),
        solution=("ab = alphas_cumprod[t].view(-1, 1, 1, 1)\n"
                  "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise"))

    def attempt():
        if (problem := _callable_problem(q_sample, "check_q_sample(q_sample)")):
            return problem
        schedule = NoiseSchedule("linear")
        x0, noise = _clean_and_noise(seed=1234)
        t = torch.tensor([0, 10, 500, 999])
        ab = schedule.alphas_cumprod.float()
        got = q_sample(x0, t, noise, ab)
        expected = schedule.q_sample(x0, t, noise)
        problem = _compare(got, expected, "x_t", 1e-4)
        if problem and isinstance(got, torch.Tensor) and got.shape == expected.shape:
            a = ab[t].view(-1, 1, 1, 1)
            if _close(got, a * x0 + (1 - a) * noise, 1e-4):
                return problem + ": it looks like the square roots are missing"
            alphas = schedule.alphas.float()[t].view(-1, 1, 1, 1)
            if _close(got, alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise, 1e-4):
                return problem + ": it looks like you used alpha_t for one step, not the cumulative product"
            shifted = ab[t - 1].view(-1, 1, 1, 1)
            if _close(got[1:], (shifted.sqrt() * x0 + (1 - shifted).sqrt() * noise)[1:], 1e-4):
                return problem + (": it looks like alphas_cumprod[t - 1] (the paper counts t from 1); here t is "
                                  "already the 0-based index, so use alphas_cumprod[t]")
            if _close(got[:1], expected[:1], 1e-4) and _close(got, ab[t[0]].sqrt() * x0 + (1 - ab[t[0]]).sqrt() * noise,
                                                               1e-4):
                return problem + ": correct for the first image only; does every image use its own t?"
        if problem:
            return problem
        # the alpha-bars are an argument: the cosine schedule's must give the cosine schedule's x_t
        cosine = NoiseSchedule("cosine")
        if (problem := _compare(q_sample(x0, t, noise, cosine.alphas_cumprod.float()), cosine.q_sample(x0, t, noise),
                                "x_t with the cosine schedule's alphas_cumprod", 1e-4)):
            return problem + ": use the alphas_cumprod you are given, not a schedule of your own"
        return None

    return run_check(exercise, attempt, guide, "your closed form matches course_lib.schedule.q_sample.")


def check_cosine_schedule(cosine_betas) -> CheckResult:
    """Exercise: ``cosine_betas(num_train_timesteps, s=0.008) -> betas`` of shape (T,)."""
    exercise = "cosine schedule"
    cosine_betas = _student(cosine_betas)
    guide = Guide(
        task=("cosine_betas(num_train_timesteps, s=0.008) returns the (T,) tensor of betas, one per step, "
              "each in (0, 0.999]."),
        hints=("Design the curve of alpha-bar first (how much signal is left at each t), then read off the betas "
               "that produce it.",
               "Nichol & Dhariwal make alpha-bar a squared cosine of t / T (shifted by a small s so it does not "
               "start too steep), normalised to 1 at t = 0. A beta is what one step removes: one minus the ratio "
               "of consecutive alpha-bars. T + 1 alpha-bars give T betas; cap them at 0.999.",
               "f(t) = cos²(((t/T + s) / (1 + s)) · π/2) for t = 0, …, T;  ᾱ_t = f(t) / f(0);  "
               "β_t = min(1 − ᾱ_t / ᾱ_{t−1}, 0.999) for t = 1, …, T."),
        solution=("t = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps\n"
                  "f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2\n"
                  "alpha_bar = f / f[0]\n"
                  "return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)"))

    def attempt():
        if (problem := _callable_problem(cosine_betas, "check_cosine_schedule(cosine_betas)")):
            return problem
        for T in (1000, 50):
            got = torch.as_tensor(cosine_betas(T))
            expected = cosine_beta_schedule(T)
            if got.ndim == 1 and len(got) == T + 1:
                return f"for T = {T} you returned {T + 1} betas; there are T betas (one per step) from T + 1 alpha-bars"
            if got.ndim == 1 and len(got) == T and got.max() > 0.999 + 1e-6:
                return "the last beta is above 0.999: clip the betas so the final step stays finite"
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            unsquared = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2)
            if got.ndim == 1 and len(got) == T and _close(got, (1 - unsquared[1:] / unsquared[:-1]).clamp(max=0.999), 1e-5):
                return "alpha-bar is the *square* of the cosine; without the square the noise arrives too slowly"
            if (problem := _compare(got, expected, f"betas for T = {T}", 1e-5)):
                return problem
        # the offset is an argument: a function that ignores s (or hard-codes 0.008) is not yet right
        if (problem := _compare(torch.as_tensor(cosine_betas(50, s=0.02)), cosine_beta_schedule(50, s=0.02),
                                "betas for T = 50, s = 0.02", 1e-5)):
            return problem + ": use the s you are given, not a fixed 0.008"
        return None

    return run_check(exercise, attempt, guide, "your betas match course_lib.schedule.cosine_beta_schedule.")


# --- notebook 02 -----------------------------------------------------------------

def _fake_noise_predictor(xt, t):
    """A deterministic stand-in for a U-Net, so checks need no trained model: (B, C, H, W), (B,) -> like xt."""
    return torch.tanh(xt * 0.7) + (t.float().view(-1, 1, 1, 1) / 1000.0)


def check_training_loss(diffusion_training_loss) -> CheckResult:
    """Exercise: ``diffusion_training_loss(model, x0, t, noise, alphas_cumprod) -> scalar``.

    Noise x0 to x_t with the closed form, ask the model for the noise, return the mean squared error.
    """
    exercise = "training loss"
    diffusion_training_loss = _student(diffusion_training_loss)
    guide = Guide(
        task=("diffusion_training_loss(model, x0, t, noise, alphas_cumprod) returns one number (a 0-dim tensor "
              "or a float): x0 and noise are (B, 1, 28, 28), t is (B,) int64, model(x_t, t) returns a tensor "
              "shaped like x_t."),
        hints=("Training shows the network a noisy image and asks for something it can be graded on exactly. "
               "What did *you* add to x0 that you know and the network does not?",
               "Make x_t from x0 and the noise with the closed form of notebook 01, ask the model what noise it "
               "sees, and score the answer against the noise you really added with the mean squared error.",
               "L = mean over pixels and images of ‖ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t) − ε‖²."),
        solution=("ab = alphas_cumprod[t].view(-1, 1, 1, 1)\n"
                  "x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n"
                  "return ((model(x_t, t) - noise) ** 2).mean()"))

    def attempt():
        if (problem := _callable_problem(diffusion_training_loss, "check_training_loss(diffusion_training_loss)")):
            return problem
        schedule = NoiseSchedule("linear")
        x0, noise = _clean_and_noise(seed=7)
        t = torch.tensor([3, 250, 600, 999])
        got = diffusion_training_loss(_fake_noise_predictor, x0.clone(), t.clone(), noise.clone(),
                                      schedule.alphas_cumprod.float())
        expected = noise_prediction_loss(_fake_noise_predictor, x0, t, noise, schedule)
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            return f"the loss should be one number (a scalar), got shape {tuple(got.shape)}: take the mean"
        got = torch.as_tensor(got, dtype=torch.float64).reshape(())
        if _close(got, ((_fake_noise_predictor(schedule.q_sample(x0, t, noise), t) - x0) ** 2).mean().double(),
                          1e-5):
            return "you compared the prediction with x0; the network predicts the noise"
        if _close(got, ((_fake_noise_predictor(x0, t) - noise) ** 2).mean().double(), 1e-5):
            return "the model was given the clean x0; give it the noised x_t"
        return _compare(got, expected.double(), "the loss", 1e-5)

    return run_check(exercise, attempt, guide, "the same loss as course_lib.ddpm.noise_prediction_loss, which training minimises.")


def check_ddpm_step(ddpm_step) -> CheckResult:
    """Exercise: ``ddpm_step(noise_pred, t, x_t, z, alphas, alphas_cumprod, posterior_variance) -> x_{t-1}``.

    DDPM's Algorithm 2: x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) * noise_pred) / sqrt(alpha_t) + sigma_t z,
    with sigma_t^2 = posterior_variance[t] and no noise added at t = 0.
    """
    exercise = "one reverse step"
    ddpm_step = _student(ddpm_step)
    guide = Guide(
        task=("ddpm_step(noise_pred, t, x_t, z, alphas, alphas_cumprod, posterior_variance) returns x_(t-1), "
              "shaped like x_t (B, 1, 28, 28); t is a Python int; z is the fresh Gaussian noise to use."),
        hints=("One step back does two things: remove the share of the predicted noise that this one step "
               "added, then put back a little fresh noise (except at the very last step).",
               "The mean subtracts the predicted noise scaled by beta_t over the square root of (1 − alpha-bar_t), "
               "then divides by the square root of alpha_t (this step's alpha, not the cumulative one). "
               "The fresh noise is scaled by the standard deviation, the square root of the posterior variance; "
               "at t = 0 no noise is added.",
               "μ = (x_t − β_t / √(1 − ᾱ_t) · ε̂) / √α_t with β_t = 1 − α_t;  x_(t−1) = μ + √(β̃_t) · z for t > 0, "
               "and x_(t−1) = μ at t = 0."),
        solution=("beta = 1 - alphas[t]\n"
                  "mean = (x_t - beta / (1 - alphas_cumprod[t]).sqrt() * noise_pred) / alphas[t].sqrt()\n"
                  "return mean if t == 0 else mean + posterior_variance[t].sqrt() * z"))

    def attempt():
        if (problem := _callable_problem(ddpm_step, "check_ddpm_step(ddpm_step)")):
            return problem
        s = NoiseSchedule("linear")
        g = torch.Generator().manual_seed(11)
        x, eps, z = (torch.randn(2, 1, 28, 28, generator=g) for _ in range(3))
        a, ab, var = s.alphas.float(), s.alphas_cumprod.float(), s.posterior_variance.float()
        for t in (999, 400, 1, 0):
            got = ddpm_step(eps, t, x, z, a, ab, var)
            mean = (x - (1 - a[t]) / (1 - ab[t]).sqrt() * eps) / a[t].sqrt()
            expected = mean + (var[t].sqrt() * z if t > 0 else 0)
            if t == 0 and isinstance(got, torch.Tensor) and got.shape == mean.shape \
                    and not _close(got, mean, 1e-4):
                return "at t = 0 the step should return the mean only: the last step adds no noise"
            # the posterior-mean form divides by 1 - ab_t, tiny at t = 1: in float32 it is exact only to about
            # eps32 * |x| / (1 - ab_t), so the tolerance follows the computation's precision
            tolerance = 1e-4 + 10 * torch.finfo(torch.float32).eps * x.abs().max().item() / (1 - ab[t].item())
            if (problem := _compare(got, expected, f"x_(t-1) at t = {t}", tolerance)):
                if isinstance(got, torch.Tensor) and got.shape == mean.shape:
                    noise = var[t].sqrt() * z if t > 0 else 0
                    beta = 1 - a[t]
                    mistakes = {   # the slips the notebook's text warns about, each with its own message
                        "it looks like the noise term sigma_t * z is missing": mean,
                        "the mean divides by the square root of alpha_t, this step's alpha, not of alpha-bar_t":
                            (x - beta / (1 - ab[t]).sqrt() * eps) / ab[t].sqrt() + noise,
                        "the predicted noise is subtracted from x_t, not added":
                            (x + beta / (1 - ab[t]).sqrt() * eps) / a[t].sqrt() + noise,
                        "the fresh noise is scaled by the standard deviation, the square root of the posterior "
                        "variance, not by the variance itself": mean + (var[t] * z if t > 0 else 0),
                    }
                    for message, wrong in mistakes.items():
                        if _close(got, wrong, tolerance):
                            return f"{problem}: {message}"
                return problem
        # the noise term alone (x_t = 0, nothing predicted, so the mean is 0): above, sqrt(beta_t) is too close to
        # the posterior's standard deviation to tell apart at most t; at small t they differ by a third or more
        zero = torch.zeros_like(x)
        for t in (1, 10):
            got = ddpm_step(zero, t, zero, z, a, ab, var)
            if (problem := _compare(got, var[t].sqrt() * z, f"x_(t-1) at t = {t} with x_t = 0 and noise_pred = 0",
                                    1e-6)):
                if isinstance(got, torch.Tensor) and _close(got, (1 - a[t]).sqrt() * z, 1e-6):
                    return (f"{problem}: the fresh noise is scaled by the square root of the posterior variance "
                            "(beta-tilde_t, posterior_variance[t]), not by the square root of beta_t")
                return problem
        return None

    return run_check(exercise, attempt, guide, "your step is Algorithm 2 of the DDPM paper (Ho et al. 2020).")


# --- notebook 03 -----------------------------------------------------------------

def check_kl_divergence(kl_to_standard_normal) -> CheckResult:
    """Exercise: ``kl_to_standard_normal(mean, logvar) -> (B,)``, KL(N(mean, exp(logvar)) || N(0, I)) per image.

    mean, logvar: (B, D). The closed form: 0.5 * sum over D of (mean^2 + exp(logvar) - 1 - logvar).
    """
    exercise = "KL term"
    kl_to_standard_normal = _student(kl_to_standard_normal)
    guide = Guide(
        task=("kl_to_standard_normal(mean, logvar) returns a (B,) tensor, one KL divergence per image; "
              "mean and logvar are (B, D) and logvar is the log of the variance."),
        hints=("The KL term measures how far each image's Gaussian code is from the standard normal: it is zero "
               "only for mean 0 and variance 1, and it adds up over independent dimensions.",
               "For one dimension, the KL from N(μ, σ²) to N(0, 1) has a closed form with three parts: the squared "
               "mean, the variance, and minus one minus the log-variance, halved. Sum over D, not over the batch.",
               "KL = ½ Σ_d (μ_d² + σ_d² − 1 − log σ_d²), with σ² = exp(logvar)."),
        solution="return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=1)")

    def attempt():
        if (problem := _callable_problem(kl_to_standard_normal, "check_kl_divergence(kl_to_standard_normal)")):
            return problem
        g = torch.Generator().manual_seed(3)
        mean, logvar = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
        expected = kl_divergence(mean, logvar)
        got = kl_to_standard_normal(mean, logvar)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return "return one KL value per image, shape (B,): sum over dim=1 only, no mean over the batch"
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            if _close(got, 2 * expected, 1e-4):
                return "twice the expected value: the formula has a factor 0.5 in front"
            if _close(got, 0.5 * (mean ** 2 + logvar - 1 - logvar.log().nan_to_num()).sum(1), 1e-4) \
                    or _close(got, 0.5 * (mean ** 2 + (0.5 * logvar).exp() - 1 - logvar).sum(1), 1e-4):
                return "the variance is exp(logvar) (not logvar, not exp(logvar / 2), which is the std)"
        if (problem := _compare(got, expected, "the KL", 1e-4)):
            return problem
        zero = kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3))
        return _compare(zero, torch.zeros(2), "the KL of N(0, I) to itself", 1e-6)

    return run_check(exercise, attempt, guide, "the same closed form as course_lib.vae.kl_divergence.")


def check_reparameterize(reparameterize) -> CheckResult:
    """Exercise: ``reparameterize(mean, logvar, eps) -> z = mean + exp(logvar / 2) * eps``, same shape."""
    exercise = "reparameterisation"
    reparameterize = _student(reparameterize)
    guide = Guide(
        task=("reparameterize(mean, logvar, eps) returns z, shaped like mean (B, D); eps is standard normal "
              "noise of the same shape, already drawn for you."),
        hints=("Gradients cannot flow through a random draw, but they can flow through a shift and a scale of "
               "noise drawn beforehand.",
               "Scale the given noise by the standard deviation and shift it by the mean. logvar is the log of "
               "the variance, so the standard deviation is the exponential of half of it. Use the eps you are "
               "given; do not draw new noise.",
               "z = μ + σ · ε with σ = exp(½ · logvar)."),
        solution="return mean + torch.exp(0.5 * logvar) * eps")

    def attempt():
        if (problem := _callable_problem(reparameterize, "check_reparameterize(reparameterize)")):
            return problem
        g = torch.Generator().manual_seed(4)
        mean = torch.randn(4, 3, generator=g).requires_grad_(True)
        logvar = torch.randn(4, 3, generator=g).requires_grad_(True)
        before = g.get_state()
        eps = torch.randn(4, 3, generator=g)
        z = reparameterize(mean, logvar, eps.clone())
        g.set_state(before)
        expected = library_reparameterize(mean, logvar, g)      # draws the same eps from the same state
        if isinstance(z, torch.Tensor) and z.shape == expected.shape and not _close(z, expected, 1e-5):
            if _close(z, mean + logvar.exp() * eps, 1e-5):
                return "you scaled eps by the variance exp(logvar); scale it by the std, exp(logvar / 2)"
            if _close(z, mean + logvar * eps, 1e-5):
                return "logvar is a log-variance: the std is exp(logvar / 2)"
        if (problem := _compare(z, expected.detach(), "z", 1e-5)):
            return problem
        if not z.requires_grad:
            return "z no longer depends on mean and logvar (did you detach or use .data?); the trick needs gradients"
        # the point of the trick: the gradient reaches both mean (dz/dmean = 1) and logvar (dz/dlogvar = std * eps / 2)
        grad_mean, grad_logvar = torch.autograd.grad(z.sum(), (mean, logvar), allow_unused=True)
        for name, grad, want in (("mean", grad_mean, torch.ones_like(mean)),
                                 ("logvar", grad_logvar, 0.5 * (0.5 * logvar).exp().detach() * eps)):
            if grad is None or not _close(grad, want, 1e-5):
                return (f"z has the right values, but the gradient does not reach {name} as it should (is part of "
                        "the formula detached, or computed from .data or .item()?); the trick needs gradients to "
                        "flow to both mean and logvar")
        return None

    return run_check(exercise, attempt, guide, "z = mean + std * eps, as course_lib.vae.reparameterize, "
                     "and gradients flow to mean and logvar.")


# --- notebook 04 -----------------------------------------------------------------

def check_contrastive_loss(clip_loss) -> CheckResult:
    """Exercise: ``clip_loss(image_features, text_features, logit_scale) -> scalar``, CLIP's loss with its temperature.

    image_features, text_features: (B, d), unit length; row i of each belong together. logit_scale: s, a 0-dim
    tensor; the similarities are multiplied by e^s = 1 / temperature before the symmetric cross-entropy.
    """
    exercise = "contrastive loss"
    clip_loss = _student(clip_loss)
    guide = Guide(
        task=("clip_loss(image_features, text_features, logit_scale) returns one number (a 0-dim tensor or a float); "
              "image_features and text_features are (B, d) and already unit length, row i of one belongs with row i "
              "of the other; logit_scale is s, a 0-dim tensor, the log of one over the temperature."),
        hints=("Three things happen: compare every image with every caption, sharpen the comparison by the "
               "temperature, and ask each image (and each caption) to pick its partner.",
               "Unit vectors make the similarity of two rows their dot product, so one matrix product gives the "
               "(B, B) table. The temperature enters as a factor e^s (s is a logarithm; e^s is large, so the "
               "similarities are multiplied, not divided). Row i is a B-way classification whose right answer is i; so "
               "is column i. Average the two cross-entropies.",
               "S = U Wᵀ;  logits = e^s · S;  L = ½ (CE(logits, [0, …, B−1]) + CE(logitsᵀ, [0, …, B−1]))."),
        solution=("logits = logit_scale.exp() * image_features @ text_features.T\n"
                  "targets = torch.arange(len(logits))\n"
                  "return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2"))

    def attempt():
        if (problem := _callable_problem(clip_loss, "check_contrastive_loss(clip_loss)")):
            return problem
        g = torch.Generator().manual_seed(5)
        images = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
        texts = F.normalize(images + 0.8 * torch.randn(6, 8, generator=g), dim=-1)   # partners alike, not equal
        scale = torch.tensor(2.3)
        similarities = images @ texts.T
        expected = contrastive_loss(scale.exp() * similarities)
        got = _as_tensor(clip_loss(images, texts, scale))
        if isinstance(got, torch.Tensor) and got.numel() == 6:
            return "return one number for the batch (F.cross_entropy averages over it), not one per pair"
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            return _compare(got, expected, "the loss", 1e-5)
        got = got.reshape(())
        targets = torch.arange(6)
        mistakes = {
            "the similarities were multiplied by s itself; s is the logarithm of the factor, use e^s":
                contrastive_loss(scale * similarities),
            "the similarities were divided by e^s; e^s = 1 / temperature multiplies them (sharper, not flatter)":
                contrastive_loss(similarities / scale.exp()),
            "the temperature is missing: the raw similarities in [-1, 1] are too flat for a confident softmax":
                contrastive_loss(similarities),
            "only one direction: average the image->text and the text->image cross-entropies":
                F.cross_entropy(scale.exp() * similarities, targets),
            "you added the two directions; CLIP averages them (divide by 2)": 2 * expected,
        }
        for message, wrong in mistakes.items():
            if _close(got, wrong.double(), 1e-5):
                return message
        if _close(got, F.cross_entropy(scale.exp() * similarities.T, targets).double(), 1e-5):
            return "only one direction: average the image->text and the text->image cross-entropies"
        return _compare(got, expected.double(), "the loss", 1e-5)

    return run_check(exercise, attempt, guide, "the symmetric cross-entropy of course_lib.clip.contrastive_loss, "
                                               "with the temperature that CLIP learns.")


def check_zero_shot(zero_shot_predict) -> CheckResult:
    """Exercise: ``zero_shot_predict(image_features, text_features) -> (B,)`` class indices.

    image_features: (B, D), text_features: (C, D), one row per class prompt, *not* normalised:
    the prediction is the class whose prompt has the highest cosine similarity.
    """
    exercise = "zero-shot prediction"
    zero_shot_predict = _student(zero_shot_predict)
    guide = Guide(
        task=("zero_shot_predict(image_features, text_features) returns a (B,) int64 tensor of class indices; "
              "image_features is (B, d), text_features is (C, d), one row per class prompt; neither is normalised."),
        hints=("CLIP compares directions, not lengths: an image belongs to the prompt whose embedding points the "
               "same way.",
               "Scale every row of both to unit length, compute every image-prompt cosine similarity at once "
               "with one matrix product, and pick each image's best prompt.",
               "ŷ_b = argmax_c ⟨u_b / ‖u_b‖, w_c / ‖w_c‖⟩."),
        solution=("sims = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T\n"
                  "return sims.argmax(dim=-1)"))

    def attempt():
        if (problem := _callable_problem(zero_shot_predict, "check_zero_shot(zero_shot_predict)")):
            return problem
        g = torch.Generator().manual_seed(6)
        image, text = torch.randn(40, 8, generator=g), torch.randn(5, 8, generator=g)
        text = text * torch.tensor([1.0, 6.0, 0.2, 3.0, 1.0]).unsqueeze(1)  # long vectors must not win for length
        expected = (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).argmax(1)
        got = zero_shot_predict(image.clone(), text.clone())
        if isinstance(got, torch.Tensor) and got.shape == (40, 5):
            return "that is the similarity matrix (B, C); return the index of the best class for each image"
        if isinstance(got, torch.Tensor) and got.shape == (8,) or isinstance(got, torch.Tensor) and got.shape == (5,):
            return "take the argmax over the classes (dim=1), one prediction per image"
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype.is_floating_point:
            return "return class indices (argmax), not similarities"
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not _close(got, expected, 0):
            if _close(got, (image @ text.T).argmax(1), 0):
                return "cosine similarity needs unit vectors: normalise image and text features first"
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            got = got.long()
        return _compare(got, expected, "the predicted classes", atol=0)

    return run_check(exercise, attempt, guide, "the same rule as course_lib.clip.zero_shot_classify: unit vectors, similarities, argmax.")


# --- notebook 05 -----------------------------------------------------------------

def check_cross_attention(cross_attention) -> CheckResult:
    """Exercise: ``cross_attention(image_tokens, text_tokens, W_q, W_k, W_v) -> (B, L, d)``.

    image_tokens: (B, L, C) (one token per pixel), text_tokens: (B, S, D); W_q: (C, d),
    W_k and W_v: (D, d). Queries come from the image, keys and values from the text:
    softmax(Q K^T / sqrt(d)) V with the softmax over the S text tokens.
    """
    exercise = "cross-attention"
    cross_attention = _student(cross_attention)
    guide = Guide(
        task=("cross_attention(image_tokens, text_tokens, W_q, W_k, W_v) returns (B, L, d): image_tokens is "
              "(B, L, c_img), text_tokens (B, S, c_txt), W_q (c_img, d), W_k and W_v (c_txt, d)."),
        hints=("In cross-attention the image asks and the text answers: which side makes the queries, and which "
               "the keys and values?",
               "Queries come from the image tokens, keys and values from the text tokens. Each query's scores "
               "against all S keys are scaled by the square root of d, turned into weights that sum to one over "
               "the text tokens, and used to average the values.",
               "Q = X W_q, K = C W_k, V = C W_v;  out = softmax(Q Kᵀ / √d) V, the softmax over the S text tokens."),
        solution=("q, k, v = image_tokens @ W_q, text_tokens @ W_k, text_tokens @ W_v\n"
                  "weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)\n"
                  "return weights @ v"))

    def attempt():
        if (problem := _callable_problem(cross_attention, "check_cross_attention(cross_attention)")):
            return problem
        g = torch.Generator().manual_seed(5)
        image, text = torch.randn(2, 9, 6, generator=g), torch.randn(2, 4, 10, generator=g)
        for d in (8, 16):
            w_q, w_k, w_v = torch.randn(6, d, generator=g), torch.randn(10, d, generator=g), torch.randn(10, d, generator=g)
            q, k, v = image @ w_q, text @ w_k, text @ w_v
            expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            got = cross_attention(image.clone(), text.clone(), w_q, w_k, w_v)
            if not isinstance(got, torch.Tensor):
                return f"return a tensor (B, L, d), got {type(got).__name__}"
            if got.shape == (2, 9, 4):
                return "that looks like the attention weights (B, L, S); multiply them by the values V"
            if got.shape == (2, 4, d):
                return ("one output per *image* token is expected (B, L, d); the queries must come from the image, "
                        "the keys and values from the text")
            if got.shape == expected.shape and not _close(got, expected, 1e-4):
                if _close(got, (q @ k.transpose(-2, -1)).softmax(-1) @ v, 1e-4):
                    return "divide the scores by sqrt(d) before the softmax, or it saturates as d grows"
                if _close(got, ((q @ k.transpose(-2, -1)) / d ** 0.5).softmax(1) @ v, 1e-4):
                    return "take the softmax over the text tokens (the last dimension), so each pixel's weights sum to 1"
            if (problem := _compare(got, expected, "the output", 1e-4)):
                return problem
        return None

    return run_check(exercise, attempt, guide, "the same numbers as torch.nn.functional.scaled_dot_product_attention.")


# --- notebook 06 -----------------------------------------------------------------

def check_classifier_free_guidance(guided) -> CheckResult:
    """Exercise: ``guided(noise_uncond, noise_cond, guidance_scale) -> noise``, classifier-free guidance."""
    exercise = "classifier-free guidance"
    guided = _student(guided)
    guide = Guide(
        task=("guided(noise_uncond, noise_cond, guidance_scale) returns the guided noise prediction, shaped like "
              "the inputs (B, 4, 7, 7); guidance_scale is a float."),
        hints=("Two predictions of the same noise differ only because one saw the prompt: that difference is the "
               "direction the prompt pulls in.",
               "Start from the prediction without the prompt and travel guidance_scale times the difference "
               "towards the prediction with it. Scale 0 must give the unconditional prediction, scale 1 the "
               "conditional one, larger scales go past it.",
               "ε̃ = ε_∅ + s · (ε_c − ε_∅)."),
        solution="return noise_uncond + guidance_scale * (noise_cond - noise_uncond)")

    def attempt():
        if (problem := _callable_problem(guided, "check_classifier_free_guidance(guided)")):
            return problem
        g = torch.Generator().manual_seed(7)
        uncond, cond = torch.randn(3, 4, 7, 7, generator=g), torch.randn(3, 4, 7, 7, generator=g)
        for scale in (0.0, 1.0, 3.0, 7.5):
            got = guided(uncond.clone(), cond.clone(), scale)
            expected = guided_noise(uncond, cond, scale)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and not _close(got, expected, 1e-5):
                if _close(got, cond, 1e-5) and all(_close(guided(uncond, cond, other), cond, 1e-5) for other in (3.0, 7.5)):
                    return (f"with guidance_scale={scale} you returned the conditional prediction, and so at every scale: "
                            "the scale must multiply the step from the unconditional prediction towards the conditional one")
                if _close(got, cond + scale * (cond - uncond), 1e-5) and \
                        _close(guided(uncond, cond, 3.0), cond + 3.0 * (cond - uncond), 1e-5):
                    return "start from the unconditional prediction, not the conditional one (scale 1 must give cond)"
                if _close(got, cond + scale * (uncond - cond), 1e-5) or \
                        _close(got, uncond + scale * (uncond - cond), 1e-5):
                    return "the direction is cond - uncond: towards the prompt, not away from it"
                return f"with guidance_scale={scale} the result differs from uncond + scale * (cond - uncond)"
            if (problem := _compare(got, expected, f"the guided noise at guidance_scale={scale}", 1e-5)):
                return problem
        return None

    return run_check(exercise, attempt, guide, "scale 0 gives the unconditional model, 1 the conditional one, "
                                              "more pushes past it, as in course_lib.ldm.guided_noise.")


def check_img2img_timesteps(img2img_timesteps) -> CheckResult:
    """Exercise: ``img2img_timesteps(timesteps, strength) -> the timesteps img2img visits``.

    timesteps: the scheduler's (N,) timesteps, noisiest first; strength in [0, 1]: the fraction of
    them to run, always the *last* (least noisy) ones; int(N * strength) of them.
    """
    exercise = "img2img timesteps"
    img2img_timesteps = _student(img2img_timesteps)
    guide = Guide(
        task=("img2img_timesteps(timesteps, strength) returns a 1-D tensor, a part of timesteps (which runs "
              "noisiest first); strength is a float in [0, 1]."),
        hints=("img2img does not start from pure noise: it noises the given image part of the way and denoises "
               "from there. Which end of the schedule does it still need?",
               "strength is the share of the steps that run; they are the least noisy ones, at the end of the "
               "list. Round the number of steps down to a whole number.",
               "With N the number of timesteps and n = ⌊N · strength⌋, keep the last n entries and skip the first N − n."),
        solution=("n = int(len(timesteps) * strength)\n"
                  "return timesteps[len(timesteps) - n:]"))

    def attempt():
        if (problem := _callable_problem(img2img_timesteps, "check_img2img_timesteps(img2img_timesteps)")):
            return problem
        uniform = (1000 - torch.arange(50) * 20) - 1
        uneven = torch.tensor([999, 900, 750, 500, 250, 100, 20])
        for timesteps, strength in [(uniform, s) for s in (0.0, 0.3, 0.35, 0.8, 1.0)] + [(uneven, 0.35)]:
            N = len(timesteps)
            n = int(N * strength)
            expected = library_img2img_timesteps(timesteps, strength)
            got = img2img_timesteps(timesteps.clone(), strength)
            if isinstance(got, (int, float)) or isinstance(got, torch.Tensor) and got.ndim == 0:
                return "return the timesteps themselves (a 1-D tensor, part of timesteps), not how many of them run"
            if isinstance(got, torch.Tensor) and len(got) == n and n and not _close(got, expected, 0):
                if _close(got, timesteps[:n], 0):
                    return ("those are the noisiest steps; img2img starts part-way down the schedule, so keep the "
                            "last ones (the least noisy)")
            if isinstance(got, torch.Tensor) and len(got) == N - n and n != N - n:
                return (f"with strength {strength}, {n} of the {N} steps should run, you ran {len(got)}: strength is "
                        "the share that runs, not the share skipped")
            if (problem := _compare(got, expected, f"the timesteps for strength {strength}", atol=0)):
                return problem
        return None

    return run_check(exercise, attempt, guide, "the same steps as course_lib.ldm.img2img_timesteps, which the pipeline runs for image=..., strength=....")


# --- notebook 07 -----------------------------------------------------------------

def _fake_velocity_model(x, timestep):
    """A deterministic stand-in for a velocity U-Net: (B, C, H, W), (B,) timesteps in [0, 1000] -> like x.

    Its output depends on the timestep's scale, so an answer that passes sigma instead of 1000 sigma shows."""
    t = torch.as_tensor(timestep).float()
    if t.shape != (x.shape[0],):
        raise ValueError(f"model(x, timestep) wants timestep of shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    t = t.view(-1, 1, 1, 1)
    return torch.sin(1.3 * x) - t / 1000.0 + 0.1 * torch.cos(t)


def check_flow_matching_loss(flow_loss) -> CheckResult:
    """Exercise: ``flow_loss(model, x0, sigma, noise) -> scalar``, the conditional flow-matching loss.

    x0, noise: (B, 1, 28, 28); sigma: (B,) in [0, 1]; the model takes (x_sigma, 1000 * sigma).
    """
    exercise = "flow-matching loss"
    flow_loss = _student(flow_loss)
    guide = Guide(
        task=("flow_loss(model, x0, sigma, noise) returns one number (a 0-dim tensor or a float): x0 and noise are "
              "(B, 1, 28, 28), sigma is a (B,) tensor of noise levels in [0, 1], and model(x, timestep) wants "
              "timestep = 1000 · sigma, shape (B,)."),
        hints=("Each training pair (a digit, a noise image) defines one straight road. Put the network somewhere "
               "on that road and ask it which way, and how fast, the road goes.",
               "The point at level sigma mixes the two ends, more noise as sigma grows; each image has its own "
               "sigma, so shape it to broadcast over the pixels. Along a straight road the velocity is the same "
               "everywhere: the difference of its two ends, pointing from the digit towards the noise "
               "(sigma grows towards the noise). Score the network's answer with the mean squared error.",
               "x_σ = (1 − σ) x0 + σ ε;  L = mean ‖v_θ(x_σ, 1000 σ) − (ε − x0)‖²."),
        solution=("s = sigma.view(-1, 1, 1, 1)\n"
                  "x = (1 - s) * x0 + s * noise\n"
                  "return ((model(x, 1000 * sigma) - (noise - x0)) ** 2).mean()"))

    def attempt():
        if (problem := _callable_problem(flow_loss, "check_flow_matching_loss(flow_loss)")):
            return problem
        x0, noise = _clean_and_noise(seed=21)
        sigma = torch.tensor([0.0, 0.3137, 0.7, 1.0])
        expected = velocity_loss(_fake_velocity_model, x0, sigma, noise).double()
        got = flow_loss(_fake_velocity_model, x0, sigma, noise)
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            return f"the loss should be one number (a scalar), got shape {tuple(got.shape)}: take the mean"
        got = _as_tensor(got)
        if not isinstance(got, torch.Tensor):
            return f"the loss should be a number or a 0-dim tensor, got {type(got).__name__}"
        got = got.reshape(())
        s = sigma.view(-1, 1, 1, 1)
        mistakes = {
            "the velocity points the other way: along x_σ = (1 − σ) x0 + σ ε it is d x_σ / dσ = ε − x0":
                ((1 - s) * x0 + s * noise, 1000 * sigma, x0 - noise),
            "the mix is reversed: at σ = 1 the point should be pure noise, so the noise gets weight σ":
                (s * x0 + (1 - s) * noise, 1000 * sigma, noise - x0),
            "the network was told σ; the U-Net's timestep is 1000 · σ (the range its time embedding was built for)":
                ((1 - s) * x0 + s * noise, sigma, noise - x0),
            "the target is the velocity ε − x0, not the noise alone (that is diffusion's target)":
                ((1 - s) * x0 + s * noise, 1000 * sigma, noise),
        }
        for message, (x, timestep, target) in mistakes.items():
            if _close(got, ((_fake_velocity_model(x, timestep) - target) ** 2).mean().double(), 1e-5):
                return message
        return _compare(got, expected, "the loss", 1e-5)

    return run_check(exercise, attempt, guide, "the same loss as course_lib.flow.velocity_loss, which trained the "
                                               "shipped flow model.")


def check_euler_step(euler_step) -> CheckResult:
    """Exercise: ``euler_step(velocity, sigma, sigma_next, x) -> x at sigma_next``, one Euler step of the flow."""
    exercise = "Euler step"
    euler_step = _student(euler_step)
    guide = Guide(
        task=("euler_step(velocity, sigma, sigma_next, x) returns x at the noise level sigma_next, shaped like x "
              "(B, 1, 28, 28); velocity is the network's prediction at x (same shape); sigma and sigma_next are "
              "Python floats with sigma_next < sigma."),
        hints=("Euler's method pretends the velocity stays what it is now for the whole step, and walks.",
               "How far to walk is the change in noise level times the velocity. The level goes down (towards the "
               "digit), so the change is negative: the step moves against the velocity, which points towards the noise.",
               "x_{σ'} = x_σ + (σ' − σ) · v_θ(x_σ, σ)."),
        solution="return x + (sigma_next - sigma) * velocity")

    def attempt():
        if (problem := _callable_problem(euler_step, "check_euler_step(euler_step)")):
            return problem
        g = torch.Generator().manual_seed(5)
        x, velocity = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
        for sigma, sigma_next in ((0.3, 0.29), (1.0, 0.75), (0.5, 0.0)):   # the first tells the slips apart
            got = euler_step(velocity, sigma, sigma_next, x)
            scheduler = FlowMatchEulerDiscreteScheduler()
            scheduler.set_timesteps(sigmas=[sigma, sigma_next])       # one step between the two levels
            expected = scheduler.step(velocity, scheduler.timesteps[0], x).prev_sample
            if isinstance(got, torch.Tensor) and got.shape == x.shape and not _close(got, expected, 1e-5):
                if _close(got, x + (sigma - sigma_next) * velocity, 1e-5):
                    return ("the step went towards the noise: σ goes down, so x changes by (σ' − σ) v, "
                            "a negative multiple of the velocity")
                if _close(got, x - sigma * velocity, 1e-5):
                    return ("that is the jump all the way to the clean-image guess x0 = x − σ v; one step only "
                            "goes as far as σ'")
                if _close(got, x - velocity, 1e-5) or _close(got, x + velocity, 1e-5):
                    return "the step must be scaled by how far the noise level moves, σ' − σ, not taken whole"
            if (problem := _compare(got, expected, f"x at σ' = {sigma_next} (from σ = {sigma})", 1e-5)):
                return problem
        return None

    return run_check(exercise, attempt, guide, "one step of course_lib.flow.FlowMatchEulerDiscreteScheduler.")


def check_split_heads(split_heads) -> CheckResult:
    """Exercise: ``split_heads(x, num_heads) -> (B, num_heads, L, d / num_heads)`` from x (B, L, d)."""
    exercise = "split heads"
    split_heads = _student(split_heads)
    guide = Guide(
        task=("split_heads(x, num_heads) returns a tensor of shape (B, num_heads, L, d // num_heads) from x of shape "
              "(B, L, d); num_heads is an int that divides d."),
        hints=("Every token keeps all its numbers; each head gets one consecutive slice of them. Only the "
               "bookkeeping changes, no arithmetic.",
               "First cut each token's d numbers into num_heads slices, which adds an axis after the token axis; "
               "then move the head axis in front of the token axis, so that each head holds a whole sequence.",
               "(B, L, d) → (B, L, h, d/h) → swap axes 1 and 2 → (B, h, L, d/h); head j of token i is "
               "x[b, i, j·d/h : (j+1)·d/h]."),
        solution=("b, length, d = x.shape\n"
                  "return x.reshape(b, length, num_heads, d // num_heads).transpose(1, 2)"))

    def attempt():
        if (problem := _callable_problem(split_heads, "check_split_heads(split_heads)")):
            return problem
        for x, heads in [(torch.arange(80, dtype=torch.float32).reshape(2, 5, 8) / 3, h) for h in (2, 4, 1)] + \
                        [(torch.arange(252, dtype=torch.float32).reshape(3, 7, 12) / 3, h) for h in (3, 6)]:
            got = split_heads(x, heads)
            expected = library_split_heads(x, heads)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and not _close(got, expected, 0):
                if _close(got, x.reshape(expected.shape), 0):
                    return ("the shape is right but the numbers are shuffled between tokens: reshaping straight to "
                            "(B, heads, L, d / heads) deals one token's numbers out to several tokens. Split the "
                            "width first, (B, L, heads, d / heads), then swap the token and head axes")
                if _close(got, x.reshape(*x.shape[:2], expected.shape[3], heads).permute(0, 3, 1, 2), 0):
                    return "each head should get a consecutive slice of the width, not every heads-th number"
            if isinstance(got, torch.Tensor) and got.shape == (*x.shape[:2], heads, x.shape[2] // heads):
                return "the head axis should come before the token axis: (B, heads, L, d / heads)"
            if (problem := _compare(got, expected, f"the result for num_heads={heads}", 0)):
                return problem
        return None

    return run_check(exercise, attempt, guide, "the same split as course_lib.attention.split_heads, which "
                                               "MultiHeadAttention uses.")
