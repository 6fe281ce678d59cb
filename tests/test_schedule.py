"""course_lib.schedule: properties of the forward process that would break if the maths were wrong."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib.data import load_mnist, normalize
from course_lib.schedule import (NoiseSchedule, convert_prediction, cosine_beta_schedule, linear_beta_schedule,
                                 make_beta_schedule)


@pytest.fixture(scope="module")
def digits():
    """64 real MNIST digits in [-1, 1] (from whichever source is available)."""
    return normalize(load_mnist("test").images[:64])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alphas_cumprod_is_monotone_and_in_range(name):
    s = NoiseSchedule(name)
    ab = s.alphas_cumprod
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert (ab[1:] < ab[:-1]).all(), "alpha-bar must fall at every step"
    assert 0.99 < ab[0] < 1 and ab[-1] < 1e-3
    assert torch.allclose(ab[0], 1 - s.betas[0])
    assert torch.allclose(ab, torch.cumprod(1 - s.betas, 0))
    snr = s.snr()
    assert (snr[1:] < snr[:-1]).all()
    assert torch.allclose(snr, ab / (1 - ab))
    assert s.snr(10).item() == pytest.approx((ab[10] / (1 - ab[10])).item())


def test_linear_schedule_values():
    b = linear_beta_schedule()
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b[1:] - b[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))
    # the DDPM paper's choice leaves alpha-bar_T ~ 4e-5: almost pure noise
    assert NoiseSchedule("linear").alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.02)


def test_cosine_schedule_follows_cos_squared():
    s = NoiseSchedule("cosine")
    T, off = 1000, 0.008
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = lambda u: torch.cos((u / T + off) / (1 + off) * math.pi / 2) ** 2
    expected = f(t) / f(torch.zeros(1, dtype=torch.float64))
    # equal wherever no beta was capped at 0.999 (only the very last step is)
    assert torch.allclose(s.alphas_cumprod[:-1], expected[:-1], rtol=1e-9)
    assert (cosine_beta_schedule() <= 0.999).all()
    # the cosine schedule destroys information more slowly in the middle than the linear one
    assert s.alphas_cumprod[500] > NoiseSchedule("linear").alphas_cumprod[500] * 5  # 0.49 vs 0.078


def test_closed_form_matches_the_markov_chain(digits):
    """Run x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps step by step; compare mean and variance."""
    s = NoiseSchedule("linear")
    x0 = digits[:2, :, 7:21, 7:21]  # the centre of two digits keeps this fast
    n, t_end = 3000, 300
    g = torch.Generator().manual_seed(0)
    x = x0.double().repeat(n, 1, 1, 1)  # n independent chains per digit
    for t in range(t_end + 1):
        x = s.step_forward(x, t, generator=g)
    x = x.view(n, *x0.shape)
    ab = s.alphas_cumprod[t_end]
    mean_err = (x.mean(0) - ab.sqrt() * x0.double()).abs().max()
    var_err = (x.var(0) - (1 - ab)).abs().max()
    # the sample mean of n chains has std sqrt((1-ab)/n); over 392 pixels the max stays below 5 sigma
    assert mean_err < 5 * math.sqrt((1 - ab) / n)
    assert var_err < 5 * (1 - ab) * math.sqrt(2 / n)
    # and the closed form itself gives the same statistics
    x_cf = s.q_sample(x0.double().repeat(n, 1, 1, 1), t_end, generator=g).view(n, *x0.shape)
    assert (x_cf.mean(0) - x.mean(0)).abs().max() < 7 * math.sqrt((1 - ab) / n)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_x_T_is_standard_normal(digits, name):
    s = NoiseSchedule(name)
    xT = s.q_sample(digits, 999, generator=torch.Generator().manual_seed(1)).flatten().numpy()
    assert abs(xT.mean()) < 0.02 and abs(xT.std() - 1) < 0.02
    # Kolmogorov-Smirnov against N(0, 1): no detectable difference with 50,000 pixels
    assert stats.kstest(xT, "norm").pvalue > 1e-3
    # while x_0 itself (mostly black background at -1) is nothing like it
    assert stats.kstest(digits.flatten().numpy(), "norm").pvalue < 1e-10


def test_posterior_agrees_with_bayes_rule():
    """Posterior precision = 1/(1-ab_{t-1}) + alpha_t/beta_t; mean = var * (precision-weighted means)."""
    s = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 10, 100, 500, 999])
    mean, var = s.q_posterior(x0, xt, t)
    a, ab_prev = s.alphas[t].view(-1, 1, 1, 1), s.alphas_cumprod_prev[t].view(-1, 1, 1, 1)
    b = s.betas[t].view(-1, 1, 1, 1)
    precision = 1 / (1 - ab_prev) + a / b
    expected_mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * xt / b) / precision
    assert torch.allclose(var, 1 / precision)
    assert torch.allclose(mean, expected_mean)
    # at t = 0 there is no uncertainty left: the posterior collapses onto x_0
    mean0, var0 = s.q_posterior(x0, xt, 0)
    assert var0.item() == 0 and torch.allclose(mean0, x0)


def test_posterior_matches_sampling():
    """Draw (x_{t-1}, x_t) pairs from the forward process; the regression of x_{t-1} on x_t fits."""
    s = NoiseSchedule("cosine")
    t, n = 200, 200_000
    g = torch.Generator().manual_seed(3)
    x0 = torch.full((n, 1, 1, 1), 0.7, dtype=torch.float64)
    x_prev = s.q_sample(x0, t - 1, generator=g)
    xt = s.step_forward(x_prev, t, generator=g)
    mean, var = s.q_posterior(x0, xt, t)
    residual = x_prev - mean
    assert abs(residual.mean().item()) < 5 * math.sqrt(var.item() / n)
    assert residual.var().item() == pytest.approx(var.item(), rel=0.02)


def test_batched_timesteps_and_shapes():
    s = NoiseSchedule()
    x0, noise = torch.zeros(3, 1, 28, 28), torch.ones(3, 1, 28, 28)
    xt = s.q_sample(x0, torch.tensor([0, 500, 999]), noise)
    assert xt.shape == x0.shape and xt.dtype == torch.float32
    assert torch.allclose(xt[:, 0, 0, 0], (1 - s.alphas_cumprod[[0, 500, 999]]).sqrt().float())


def test_bad_arguments_are_explained():
    s = NoiseSchedule()
    x0 = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"t must be in \[0, 999\]"):
        s.q_sample(x0, 1000)
    with pytest.raises(ValueError, match="out of range"):
        s.q_sample(x0, torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match="integers"):
        s.q_sample(x0, 0.5)
    with pytest.raises(ValueError, match="one timestep per image"):
        s.q_sample(x0, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise has shape"):
        s.q_sample(x0, 3, noise=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_beta_schedule("quadratic")
    with pytest.raises(ValueError, match="^num_train_timesteps must be an integer from 1"):
        linear_beta_schedule(0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_each_prediction_gives_back_x0_and_the_noise(prediction_type):
    """The three targets are interchangeable: from the true target and x_t, convert_prediction recovers both
    x0 and the noise, for every t (including t = 0 and T-1, where one of a, s is tiny)."""
    schedule = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(5, 1, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(5, 1, 6, 6, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 300, 998, 999])
    x_t = schedule.q_sample(x0, t, noise)
    target = schedule.training_target(x0, noise, t, prediction_type)
    ab = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0_back, noise_back = convert_prediction(target, x_t, ab, prediction_type)
    assert torch.allclose(x0_back, x0, atol=1e-9) and torch.allclose(noise_back, noise, atol=1e-9)


def test_velocity_by_hand_and_its_geometry():
    """v = a eps - s x0; since a^2 + s^2 = 1, (x_t, v) is (x0, eps) turned by the angle phi with a = cos phi:
    lengths are kept, so |x_t|^2 + |v|^2 = |x0|^2 + |eps|^2."""
    schedule = NoiseSchedule("cosine")
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).unbind(0)
    x0, noise = x0[None], noise[None]
    t = 400
    a, s = math.sqrt(schedule.alphas_cumprod[t].item()), math.sqrt(1 - schedule.alphas_cumprod[t].item())
    v = schedule.get_velocity(x0, noise, t)
    assert torch.allclose(v, a * noise - s * x0)
    x_t = schedule.q_sample(x0, t, noise)
    assert torch.allclose(x_t.square() + v.square(), x0.square() + noise.square())


def test_prediction_type_is_checked():
    schedule = NoiseSchedule()
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="prediction_type must be one of 'epsilon', 'sample', 'v_prediction'"):
        schedule.training_target(x, x, 0, "v")
    with pytest.raises(ValueError, match="must match"):
        convert_prediction(torch.zeros(1, 1, 3, 3), x, 0.5, "epsilon")
