"""course_lib.pipelines: the public call's contract (shape, range, seeds, validation)."""

import pytest
import torch

from course_lib import pipelines
from course_lib.ddpm import DDPMPipeline
from course_lib.unet import UNet


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    unet = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, True))
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)  # an untrained but non-trivial noise predictor
    return DDPMPipeline(unet)


def test_output_contract_and_seeds(pipe):
    a = pipe(batch_size=3, num_inference_steps=5, sampler="ddim", seed=1, progress=False)
    assert a.shape == (3, 1, 28, 28) and a.device.type == "cpu"
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, pipe(batch_size=3, num_inference_steps=5, sampler="ddim", seed=1, progress=False))
    assert not torch.equal(a, pipe(batch_size=3, num_inference_steps=5, sampler="ddim", seed=2, progress=False))
    b = pipe(batch_size=2, num_inference_steps=4, sampler="ddpm", seed=1, progress=False)
    assert torch.equal(b, pipe(batch_size=2, num_inference_steps=4, sampler="ddpm", seed=1, progress=False))


def test_callback_sees_every_step(pipe):
    seen = []
    pipe(batch_size=1, num_inference_steps=10, sampler="ddim", progress=False,
         callback=lambda i, t, x, x0: seen.append((i, t, tuple(x.shape), tuple(x0.shape))))
    assert [s[1] for s in seen] == list(range(999, 0, -100))
    assert seen[0][2:] == ((1, 1, 28, 28), (1, 1, 28, 28))


def test_eta_interval_confines_the_noise_to_part_of_the_path(pipe):
    def run(**kwargs):
        steps = []
        final = pipe(batch_size=2, num_inference_steps=10, sampler="ddim", seed=4, progress=False,
                     callback=lambda i, t, x, x0: steps.append((t, x.clone())), **kwargs)
        return final, steps

    deterministic, ddim_steps = run()
    noisy, _ = run(eta=1.0)
    assert torch.equal(run(eta=1.0, eta_interval=(0.0, 0.0))[0], deterministic)   # holds t = 0 only, never visited
    assert torch.equal(run(eta=1.0, eta_interval=(0.0, 1.0))[0], noisy)           # every step
    below, below_steps = run(eta=1.0, eta_interval=(0.0, 0.5))                     # t = 399, 299, ... get noise
    for (t, x), (_, ddim_x) in zip(below_steps, ddim_steps):
        assert torch.equal(x, ddim_x) == (t >= 500), t      # DDIM's path exactly until t < 500, then its own
    above, above_steps = run(eta=1.0, eta_interval=(0.5, 1.0))
    assert not torch.equal(above_steps[0][1], ddim_steps[0][1])                    # noise from the first step on
    assert not torch.equal(below, noisy) and not torch.equal(above, below)


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2.0), "batch_size"),
    (dict(num_inference_steps=0), "num_inference_steps"), (dict(num_inference_steps=1001), "num_inference_steps"),
    (dict(seed=-1), "seed"), (dict(sampler="euler"), "sampler must be one of 'ddpm', 'ddim', 'dpmsolver', got 'euler'"),
    (dict(sampler="ddim", eta=2.0), "eta"), (dict(sampler="ddpm", eta=0.5), "only apply to sampler=.ddim."),
    (dict(sampler="ddpm", use_clipped_model_output=False), "only apply"),
    (dict(sampler="dpmsolver", eta_interval=(0.0, 0.5)), "only apply"),
    (dict(sampler="ddim", eta=1.0, eta_interval=(0.0, 1.5)), "eta_interval high must be a number from 0 to 1"),
    (dict(sampler="ddim", eta=1.0, eta_interval=0.5), "eta_interval must be a pair .low, high."),
    (dict(sampler="ddim", eta=1.0, eta_interval=(0.6, 0.4)), "must not exceed"),
])
def test_bad_arguments_are_explained(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**{"num_inference_steps": 2, **kwargs, "progress": False})


def test_unknown_pipeline():
    with pytest.raises(ValueError, match="unknown pipeline 'sdxl'"):
        pipelines.load("sdxl")
