"""course_lib.flow: the straight path, its loss, the Euler and Heun schedulers, and the bridge to diffusion."""

import copy

import pytest
import torch

from course_lib.flow import (DiffusionAsFlow, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, FlowMatchingPipeline,
                             flow_matching_loss, from_diffusion, interpolate, reflow_loss, reflow_pairs, sample_sigmas,
                             velocity_loss, velocity_target)
from course_lib.samplers import DDIMScheduler
from course_lib.schedule import NoiseSchedule
from course_lib.train import train
from course_lib.toy import ToyNet, sliced_wasserstein, straightness, toy_trajectories, train_toy, two_moons
from course_lib.unet import UNet


def pair(seed=0, shape=(3, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g)


def test_the_path_runs_from_the_digit_to_the_noise_at_the_target_velocity():
    x0, noise = pair()
    assert torch.equal(interpolate(x0, noise, 0.0), x0) and torch.equal(interpolate(x0, noise, 1.0), noise)
    sigma = torch.tensor([0.1, 0.5, 0.9])
    h = 1e-3     # the velocity is the derivative along the path, the same everywhere on it
    slope = (interpolate(x0.double(), noise.double(), sigma.double() + h)
             - interpolate(x0.double(), noise.double(), sigma.double() - h)) / (2 * h)
    assert torch.allclose(slope, velocity_target(x0, noise).double(), atol=1e-9)
    with pytest.raises(ValueError, match="must match"):
        interpolate(x0, noise[:1], 0.5)


def test_the_loss_is_zero_for_the_true_velocity_and_positive_otherwise():
    x0, noise = pair()
    sigma = torch.tensor([0.2, 0.6, 1.0])
    oracle = lambda x, t: noise - x0                                          # knows the pair: exact
    assert velocity_loss(oracle, x0, sigma, noise).item() == 0
    assert velocity_loss(lambda x, t: noise, x0, sigma, noise).item() > 0.1
    seen = []
    velocity_loss(lambda x, t: seen.append(t) or noise - x0, x0, sigma, noise)
    assert torch.allclose(seen[0], 1000 * sigma)                               # the U-Net hears 1000 sigma
    loss_fn = flow_matching_loss("logit_normal")
    model = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, False))
    images = torch.rand(4, 1, 28, 28)
    assert loss_fn(model, (images, torch.zeros(4)), torch.Generator().manual_seed(0)).ndim == 0
    with pytest.raises(ValueError, match="time_sampling"):
        flow_matching_loss("cosine")


def test_sigma_sampling():
    g = torch.Generator().manual_seed(0)
    for kind in ("uniform", "logit_normal"):
        s = sample_sigmas(20_000, g, kind)
        assert s.min() > 0 and s.max() < 1 and abs(s.mean().item() - 0.5) < 0.01
    middle = lambda s: ((s > 0.25) & (s < 0.75)).float().mean().item()
    assert middle(sample_sigmas(20_000, g, "logit_normal")) > middle(sample_sigmas(20_000, g, "uniform")) + 0.1


def run(scheduler_class, velocity, x, steps):
    scheduler = scheduler_class()
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t / 1000), t, x).prev_sample
    return x


def test_one_euler_step_is_exact_on_a_straight_path():
    x0, noise = pair()
    assert torch.allclose(run(FlowMatchEulerDiscreteScheduler, lambda x, s: noise - x0, noise, 1), x0, atol=1e-6)


def test_heun_is_second_order_and_euler_first_order():
    # dx/dsigma = x * sigma from x(1) = 1: x(0) = exp(-1/2). Heun's last step is Euler (as in diffusers),
    # so compare on a path whose slope vanishes at sigma = 0, where that last step is exact to second order too.
    exact = torch.exp(torch.tensor(-0.5))
    f = lambda x, s: x * s
    error = {cls: [abs(run(cls, f, torch.ones(1), n).item() - exact.item()) for n in (8, 16, 32)]
             for cls in (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)}
    euler, heun = error[FlowMatchEulerDiscreteScheduler], error[FlowMatchHeunDiscreteScheduler]
    assert 1.7 < euler[0] / euler[1] < 2.3 and 1.7 < euler[1] / euler[2] < 2.3
    assert heun[0] / heun[1] > 3.2 and heun[1] / heun[2] > 3.2
    heun_scheduler = FlowMatchHeunDiscreteScheduler()
    heun_scheduler.set_timesteps(4)
    assert len(heun_scheduler.timesteps) == 7                               # 2 n - 1 network calls


def test_schedulers_refuse_misuse_with_a_sentence():
    scheduler = FlowMatchEulerDiscreteScheduler()
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.step(x, 1000, x)
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="in order"):
        scheduler.step(x, 500, x)
    scheduler.step(x, 1000, x), scheduler.step(x, 500, x)
    with pytest.raises(RuntimeError, match="all 2 timesteps"):
        scheduler.step(x, 500, x)
    with pytest.raises(ValueError, match="fall strictly"):
        scheduler.set_timesteps(sigmas=[0.5, 0.7])
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0)
    shifted.set_timesteps(4)
    assert shifted.sigmas[1] > 0.75                                        # shift spends steps at high noise


def test_ddim_is_an_euler_step_of_the_flow_in_disguise():
    """The bridge: a diffusion prediction, translated by from_diffusion, takes the same step as flow Euler."""
    schedule = NoiseSchedule("linear")
    x0, noise = pair(1)
    ddim = DDIMScheduler(clip_sample=False)
    ddim.set_timesteps(10)
    t, t_prev = int(ddim.timesteps[3]), int(ddim.timesteps[4])
    x_t = schedule.q_sample(x0, torch.full((3,), t), noise)
    g = torch.Generator().manual_seed(2)
    eps_pred = noise + 0.3 * torch.randn(noise.shape, generator=g)           # an imperfect network
    ab, ab_prev = schedule.alphas_cumprod[t].item(), schedule.alphas_cumprod[t_prev].item()
    flow_x, sigma, velocity = from_diffusion(x_t, eps_pred, ab)
    assert abs(sigma - (1 - ab) ** 0.5 / (ab ** 0.5 + (1 - ab) ** 0.5)) < 1e-12
    assert torch.allclose(from_diffusion(x_t, noise, ab)[0], interpolate(x0, noise, sigma), atol=1e-5)
    assert torch.allclose(from_diffusion(x_t, noise, ab)[2], noise - x0, atol=1e-3)
    ddim_prev = ddim.step(eps_pred, t, x_t).prev_sample
    _, sigma_prev, _ = from_diffusion(ddim_prev, eps_pred, ab_prev)
    euler = flow_x + (sigma_prev - sigma) * velocity
    assert torch.allclose(ddim_prev / (ab_prev ** 0.5 + (1 - ab_prev) ** 0.5), euler, atol=1e-5)


def test_pipeline_is_deterministic_and_checks_its_arguments():
    unet = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, False))
    pipe = FlowMatchingPipeline(unet)
    a, b = pipe(2, 3, seed=4, progress=False), pipe(2, 3, seed=4, progress=False)
    assert a.shape == (2, 1, 28, 28) and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b)
    assert not torch.equal(a, pipe(2, 3, seed=5, progress=False))
    calls = []
    pipe(1, 3, sampler="heun", progress=False, callback=lambda *args: calls.append(args[1]))
    assert len(calls) == 5
    with pytest.raises(ValueError, match="sampler must be one of"):
        pipe(1, 2, sampler="ddim")
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(1, 0)


def test_pipeline_takes_its_own_levels_and_returns_every_level_on_request():
    unet = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, False))
    with torch.no_grad():                            # a fresh U-Net outputs zeros (its last layer starts at zero)
        for p in unet.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    pipe = FlowMatchingPipeline(unet)
    even = torch.linspace(1, 0, 4, dtype=torch.float64).tolist()
    assert torch.equal(pipe(2, 3, seed=1, progress=False), pipe(2, sigmas=even, seed=1, progress=False))
    assert not torch.equal(pipe(2, 3, seed=1, progress=False), pipe(2, sigmas=[1.0, 0.9, 0.5, 0.0], seed=1, progress=False))
    noise = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for sampler in ("euler", "heun"):                # Heun's trial points are not levels
        levels = pipe.solve(noise, 3, sampler=sampler, progress=False, return_levels=True)
        assert len(levels) == 4 and torch.equal(levels[0], noise)
        assert torch.equal(levels[-1], pipe.solve(noise, 3, sampler=sampler, progress=False))
    for bad in ([0.8, 0.4, 0.0], [1.0, 0.5, 0.1]):
        with pytest.raises(ValueError, match="from 1 .* to 0"):
            pipe(1, sigmas=bad)
    with pytest.raises(ValueError, match="fall strictly"):
        pipe(1, sigmas=[1.0, 0.5, 0.7, 0.0])


def test_the_toy_trains_and_flows_towards_the_moons():
    data = two_moons(1000, torch.Generator().manual_seed(0))
    assert data.shape == (1000, 2) and data.abs().max() < 1.1
    net = train_toy("flow", steps=300, progress=False)
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    path = toy_trajectories(net, "flow", noise, 8)
    assert path.shape == (9, 1000, 2) and torch.equal(path[0], noise)
    assert sliced_wasserstein(path[-1], data) < 0.5 * sliced_wasserstein(noise, data)
    assert ((straightness(path) > 0) & (straightness(path) <= 1 + 1e-6)).all()
    line = torch.linspace(0, 1, 5)[:, None, None] * torch.ones(5, 3, 2)       # a straight path: straightness 1
    assert torch.allclose(straightness(line), torch.ones(3))
    with pytest.raises(ValueError, match="kind"):
        toy_trajectories(ToyNet(), "gan", noise, 2)


def test_a_diffusion_network_on_ddims_own_levels_samples_exactly_like_ddim():
    """DiffusionAsFlow + Euler at the sigmas of DDIM's timesteps reproduces DDIM (with its clipping) step by step."""
    schedule = NoiseSchedule("linear")
    net = ToyNet()                                    # any network will do: the identity is algebraic
    ddim = DDIMScheduler()
    ddim.set_timesteps(6)
    ab = schedule.alphas_cumprod.double()[ddim.timesteps]
    scale = ab.sqrt() + (1 - ab).sqrt()
    levels = ((1 - ab).sqrt() / scale).tolist() + [0.0]
    noise = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = noise
        for t in ddim.timesteps:
            x = ddim.step(net(x, torch.full((50,), int(t))), int(t), x).prev_sample
        flow = FlowMatchEulerDiscreteScheduler()
        flow.set_timesteps(sigmas=levels)
        y, model = noise / scale[0], DiffusionAsFlow(net, schedule)
        for t in flow.timesteps:
            y = flow.step(model(y, torch.full((50,), float(t))), t, y).prev_sample
    assert torch.allclose(x, y, atol=1e-4), (x - y).abs().max()


def test_reflow_pairs_are_the_flows_own_end_points_and_straighten_it():
    """One round of reflow on the toy: the pairs are what the teacher's sampler makes of their noise, and a copy
    fine-tuned on them reaches the teacher's end points in one Euler step far better than the teacher does."""
    teacher = FlowMatchingPipeline(train_toy("flow", steps=1500, progress=False), sample_shape=(2,))
    noise, x0 = reflow_pairs(teacher, 4000, num_inference_steps=8, sampler="heun", seed=3, progress=False)
    assert noise.shape == x0.shape == (4000, 2)
    assert torch.equal(noise, torch.randn(4000, 2, generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(x0[:10], teacher.solve(noise[:10], 8, "heun", progress=False), atol=1e-5)
    assert torch.equal(x0, reflow_pairs(teacher, 4000, 8, "heun", seed=3, progress=False)[1])   # deterministic

    student = copy.deepcopy(teacher.unet).requires_grad_(True)         # reflow starts from the teacher's weights
    student = train(student, reflow_loss(), (noise, x0), steps=1500, batch_size=256, lr=2e-3,
                    warmup_steps=50, ema_decay=0.99, progress=False).ema_model
    fresh = torch.randn(1000, 2, generator=torch.Generator().manual_seed(99))   # noise neither model trained on
    target = teacher.solve(fresh, 8, "heun", progress=False)
    one_step = {name: FlowMatchingPipeline(net, sample_shape=(2,)).solve(fresh, 1, progress=False)
                for name, net in (("teacher", teacher.unet), ("reflowed", student))}
    error = {name: (x - target).pow(2).sum(1).mean().item() for name, x in one_step.items()}
    assert error["reflowed"] < 0.3 * error["teacher"], error
    paths = {name: toy_trajectories(net, "flow", fresh, 8) for name, net in (("teacher", teacher.unet),
                                                                              ("reflowed", student))}
    assert straightness(paths["reflowed"]).mean() > straightness(paths["teacher"]).mean()
    with pytest.raises(ValueError, match="shape"):
        teacher.solve(torch.randn(3, 1, 28, 28), 2)
