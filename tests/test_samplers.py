"""course_lib.samplers: the arithmetic of DDPM and DDIM against the papers' formulas."""

import math

import pytest
import torch

from course_lib.samplers import DDIMScheduler, DDPMScheduler, make_scheduler
from course_lib.schedule import NoiseSchedule


def test_timesteps_are_spaced_like_diffusers():
    s = DDIMScheduler()
    s.set_timesteps(50)
    assert s.timesteps.tolist() == list(range(999, 0, -20))
    s.set_timesteps(1000)
    assert s.timesteps.tolist() == list(range(999, -1, -1))
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [999]            # one step: straight from pure noise to a guess
    s.set_timesteps(3)                              # 1000 / 3 is not whole: still even, still ends at the clean image
    assert s.timesteps.tolist() == [999, 666, 332]
    assert [s.previous_timestep(t) for t in s.timesteps.tolist()] == [666, 332, -1]
    with pytest.raises(ValueError, match="not one of scheduler.timesteps"):
        s.previous_timestep(500)
    for bad in [0, 1001, 2.5, True]:
        with pytest.raises(ValueError, match="num_inference_steps"):
            s.set_timesteps(bad)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DDPMScheduler().step(torch.zeros(1, 1, 2, 2), 5, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="sampler must be one of 'ddpm', 'ddim', 'dpmsolver'"):
        make_scheduler("euler")


def test_ddpm_step_is_algorithm_2_of_the_paper():
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - ab_t) eps) + sigma_t z, sigma_t^2 = beta-tilde_t."""
    sched = DDPMScheduler(clip_sample=False)
    sched.set_timesteps(1000)
    ns = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    for t in [999, 500, 10, 1, 0]:
        got = sched.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        a, ab, b = ns.alphas[t].item(), ns.alphas_cumprod[t].item(), ns.betas[t].item()
        sigma = math.sqrt(ns.posterior_variance[t].item()) if t > 0 else 0.0
        expected = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a) + sigma * z
        assert torch.allclose(got, expected, atol=1e-10), t


def test_ddpm_step_is_the_posterior_at_the_predicted_x0():
    sched = DDPMScheduler(clip_sample=False)
    sched.set_timesteps(1000)
    ns = sched.schedule
    x, eps, t = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64), 300
    out = sched.step(eps, t, x, generator=torch.Generator().manual_seed(1))
    ab = ns.alphas_cumprod[t].item()
    assert torch.allclose(out.pred_original_sample, (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab))
    mean, var = ns.q_posterior(out.pred_original_sample, x, t)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(out.prev_sample, mean + var.sqrt() * z)


def test_ddim_step_by_hand():
    """DDIM eq. 12 with eta = 0 on numbers small enough to check with a pencil."""
    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(10)                           # t = 999, 899, ..., 99
    ab = sched.alphas_cumprod
    x, eps = torch.tensor([[[[0.5]]]], dtype=torch.float64), torch.tensor([[[[-1.0]]]], dtype=torch.float64)
    out = sched.step(eps, 599, x)
    ab_t, ab_prev = ab[599].item(), ab[499].item()
    x0 = (0.5 + math.sqrt(1 - ab_t)) / math.sqrt(ab_t)
    assert out.pred_original_sample.item() == pytest.approx(x0)
    assert out.prev_sample.item() == pytest.approx(math.sqrt(ab_prev) * x0 - math.sqrt(1 - ab_prev))
    # deterministic: no generator, same answer twice
    assert torch.equal(sched.step(eps, 599, x).prev_sample, out.prev_sample)
    # the last step lands on the predicted clean image
    assert torch.allclose(sched.step(eps, 99, x).prev_sample, sched.step(eps, 99, x).pred_original_sample)
    with pytest.raises(ValueError, match="eta"):
        sched.step(eps, 599, x, eta=1.5)


def test_ddim_with_eta_1_has_ddpm_variance():
    ddim = DDIMScheduler(clip_sample=False)
    ddim.set_timesteps(1000)
    ns = ddim.schedule
    x, eps, t = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64), 400
    z = torch.randn(1, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = ddim.step(eps, t, x, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert out.prev_sample.item() == pytest.approx(math.sqrt(ns.posterior_variance[t].item()) * z.item())


def oracle_for_gaussian_data(scale: float, alphas_cumprod: torch.Tensor):
    """The exact noise prediction E[eps | x_t] when the data are N(0, scale^2) (per pixel)."""
    def predict(x, t):
        ab = alphas_cumprod[int(t)].item()
        return math.sqrt(1 - ab) * x / (ab * scale ** 2 + 1 - ab)
    return predict


def sample_with_oracle(sampler, steps, scale=0.5, n=20_000):
    sched = make_scheduler(sampler, clip_sample=False)
    sched.set_timesteps(steps)
    oracle = oracle_for_gaussian_data(scale, sched.alphas_cumprod)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    for t in sched.timesteps:
        x = sched.step(oracle(x, t), int(t), x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_reproduce_the_data_distribution(sampler):
    """With a perfect noise predictor, sampling from N(0, I) must end at the data distribution N(0, 0.5^2)."""
    x = sample_with_oracle(sampler, 1000)
    assert abs(x.mean().item()) < 0.02
    assert x.std().item() == pytest.approx(0.5, rel=0.02)
    # with fewer, larger steps the discretisation error shrinks the spread, less and less as steps grow
    spreads = [sample_with_oracle(sampler, steps).std().item() for steps in (10, 50, 250)]
    assert spreads[0] < spreads[1] < spreads[2] < 0.5
    assert spreads[1] > 0.42  # 50 steps: within 16%


def test_samplers_find_a_single_training_image():
    """If the data is one image, the oracle's x0-prediction is that image and every sampler returns it."""
    target = torch.linspace(-0.9, 0.9, 16, dtype=torch.float64).view(1, 1, 4, 4)
    for sampler, steps in [("ddpm", 1000), ("ddim", 20), ("ddim", 1)]:
        sched = make_scheduler(sampler)
        sched.set_timesteps(steps)
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for t in sched.timesteps:
            ab = sched.alphas_cumprod[int(t)].item()
            eps = (x - math.sqrt(ab) * target) / math.sqrt(1 - ab)
            x = sched.step(eps, int(t), x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        assert torch.allclose(x, target.expand_as(x), atol=1e-6), sampler


def test_clip_sample_keeps_x0_in_range():
    sched = DDPMScheduler()
    sched.set_timesteps(1000)
    out = sched.step(torch.full((1, 1, 2, 2), -50.0), 999, torch.zeros(1, 1, 2, 2))
    assert out.pred_original_sample.abs().max() <= 1
    with pytest.raises(ValueError, match="must match"):
        sched.step(torch.zeros(1, 1, 2, 2), 999, torch.zeros(1, 1, 3, 3))


def test_ddim_recomputes_the_noise_from_a_clipped_x0():
    """With clip_sample, the step combines the clipped x0 with the noise that goes with it (GLIDE, diffusers' switch)."""
    sched = DDIMScheduler()
    sched.set_timesteps(50)
    x = torch.full((1, 1, 2, 2), 0.5)
    eps = torch.tensor([[[[-40.0, 0.5], [0.2, 40.0]]]])    # x0 guesses far outside [-1, 1], except at (0, 1)
    t, prev = 999, sched.previous_timestep(999)
    ab_t, ab_prev = sched.alphas_cumprod[t].item(), sched.alphas_cumprod[prev].item()
    x0 = ((x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)).clamp(-1, 1)
    eps_clipped = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    out = sched.step(eps, t, x)
    assert torch.allclose(out.prev_sample, math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps_clipped, atol=1e-6)
    plain = sched.step(eps, t, x, use_clipped_model_output=False)       # DDIM eq. 12 with the raw noise
    assert torch.allclose(plain.prev_sample, math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps, atol=1e-6)
    assert not torch.allclose(out.prev_sample, plain.prev_sample)
    # where x0 needed no clipping, the two agree
    assert torch.allclose(out.prev_sample[0, 0, 0, 1], plain.prev_sample[0, 0, 0, 1], atol=1e-6)


# --- DPM-Solver++(2M) -------------------------------------------------------------------

def _gaussian_data_model(mean: float, std: float, alphas_cumprod: torch.Tensor):
    """The exact noise prediction for data N(mean, std^2) per pixel: with it, sampling is pure ODE solving."""
    def model(x, t):
        ab = alphas_cumprod[t].double()
        x0 = mean + ab.sqrt() * std ** 2 / (ab * std ** 2 + 1 - ab) * (x - ab.sqrt() * mean)   # E[x0 | x_t]
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    return model


def _solve(scheduler, model, x_T, steps):
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, int(t)), int(t), x).prev_sample
    return x


def test_dpm_solver_is_second_order_where_ddim_is_first():
    """On Gaussian data the probability-flow ODE has a closed-form solution; DPM-Solver++(2M)'s error must
    fall about 4x per doubling of the steps (second order), DDIM's about 2x (first order, Euler).
    (With few, evenly spaced timesteps the first-order first step dominates both: at 10 steps they are
    within 3% of each other here, so the orders are compared where the steps are small.)"""
    from course_lib.samplers import DPMSolverMultistepScheduler

    mean, std = 0.3, 0.2
    ddim, dpm = DDIMScheduler(clip_sample=False), DPMSolverMultistepScheduler(clip_sample=False)
    model = _gaussian_data_model(mean, std, ddim.alphas_cumprod)
    x_T = torch.randn(4096, generator=torch.Generator().manual_seed(0)).double()
    ab_T = ddim.alphas_cumprod[999].double()
    exact = mean + std / (ab_T * std ** 2 + 1 - ab_T).sqrt() * (x_T - ab_T.sqrt() * mean)
    error = {(name, n): (_solve(s, model, x_T, n) - exact).abs().max().item()
             for name, s in (("ddim", ddim), ("dpm", dpm)) for n in (40, 80, 160)}
    assert error["dpm", 40] < error["ddim", 40] / 1.5, error
    assert error["dpm", 80] / error["dpm", 160] > 3.0, error          # second order: ~4x
    assert 1.5 < error["ddim", 80] / error["ddim", 160] < 2.5, error  # first order: ~2x


def test_dpm_solver_step_matches_the_paper_in_its_own_notation():
    """Three steps against Algorithm 2 of Lu et al. (2022) written out independently in sigma/alpha/lambda form."""
    from course_lib.samplers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(clip_sample=False)
    scheduler.set_timesteps(10)
    ab = scheduler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 4, 4, generator=g).double()
    ours, history = x.clone(), []
    for i, t in enumerate(scheduler.timesteps[:3].tolist()):
        eps = torch.randn(x.shape, generator=g).double()
        ours = scheduler.step(eps, t, ours).prev_sample
        s = scheduler.timesteps[i + 1].item()
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        lam = torch.log(alpha) - torch.log(sigma)
        m0 = (x - sigma[t] * eps) / alpha[t]
        h = lam[s] - lam[t]
        if not history:                                              # first order (DDIM) to start
            x = sigma[s] / sigma[t] * x - alpha[s] * torch.expm1(-h) * m0
        else:
            m1, t1 = history[-1]
            r0 = (lam[t] - lam[t1]) / h
            D0, D1 = m0, (m0 - m1) / r0
            x = sigma[s] / sigma[t] * x - alpha[s] * torch.expm1(-h) * D0 - 0.5 * alpha[s] * torch.expm1(-h) * D1
        history.append((m0, t))
        assert torch.allclose(ours, x, atol=1e-10), (i, (ours - x).abs().max())


def test_dpm_solver_lands_on_its_guess_and_resets_between_runs():
    from course_lib.samplers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler()
    model = _gaussian_data_model(0.0, 0.5, scheduler.alphas_cumprod)
    x_T = torch.randn(8, generator=torch.Generator().manual_seed(2)).double()
    first = _solve(scheduler, model, x_T, 5)
    assert torch.equal(first, _solve(scheduler, model, x_T, 5))   # set_timesteps forgets the last run's history
    scheduler.set_timesteps(3)
    x = x_T.clone()
    for t in scheduler.timesteps.tolist():
        out = scheduler.step(model(x, t), t, x)
        x = out.prev_sample
    assert torch.equal(x, out.pred_original_sample)               # the final step returns the x0 guess


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_every_prediction_type_gives_the_same_step(sampler):
    """A network that predicts x0 or v carries the same information as one that predicts the noise: fed the
    matching outputs, each scheduler takes exactly the same step."""
    schedule = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 5, 5, generator=g, dtype=torch.float64) * 1.6 - 0.8
    noise = torch.randn(3, 1, 5, 5, generator=g, dtype=torch.float64)
    results = {}
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        sched = make_scheduler(sampler, prediction_type=prediction_type)
        sched.set_timesteps(10)
        x = schedule.q_sample(x0, int(sched.timesteps[0]), noise)
        for t in sched.timesteps[:3]:        # three steps, so DPM-Solver's second-order update is used too
            output = schedule.training_target(x0, (x - schedule.sqrt_alphas_cumprod[t] * x0)
                                              / schedule.sqrt_one_minus_alphas_cumprod[t], int(t), prediction_type)
            x = sched.step(output, int(t), x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        results[prediction_type] = x
    assert torch.allclose(results["sample"], results["epsilon"], atol=1e-9)
    assert torch.allclose(results["v_prediction"], results["epsilon"], atol=1e-9)
