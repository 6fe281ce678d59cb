"""course_lib.train: deterministic, resumable, EMA as defined, nothing overwritten."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.ddpm import diffusion_loss
from course_lib.train import EMA, load_checkpoint, seconds_per_step, train
from course_lib.schedule import NoiseSchedule


def regression_data(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 1


def mse_loss(model, batch, generator):
    x, y = batch
    return F.mse_loss(model(x).squeeze(1), y)


def fresh_model():
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def test_seconds_per_step_times_real_optimiser_steps():
    """It trains (the model changes), and a loss that does 200 times the work costs more per step."""
    model, data = fresh_model(), regression_data(4096)
    before = model.weight.detach().clone()
    one = seconds_per_step(model, mse_loss, data, steps=5)
    assert one > 0 and not torch.equal(before, model.weight)

    def heavy_loss(model, batch, generator):
        return sum(mse_loss(model, batch, generator) for _ in range(200))

    assert seconds_per_step(fresh_model(), heavy_loss, data, steps=5) > 3 * one
    with pytest.raises(ValueError, match="steps"):
        seconds_per_step(fresh_model(), mse_loss, data, steps=0)


def test_training_learns_and_is_deterministic():
    a = train(fresh_model(), mse_loss, regression_data(), steps=600, batch_size=32, lr=0.1, progress=False)
    b = train(fresh_model(), mse_loss, regression_data(), steps=600, batch_size=32, lr=0.1, progress=False)
    assert a.losses == b.losses
    assert a.losses[-1] < 0.01 * a.losses[0]
    assert torch.allclose(a.model.weight, torch.tensor([[1.0, -2.0, 0.5, 3.0]]), atol=0.05)


def test_a_finished_run_is_loaded_not_trained_again(tmp_path):
    ckpt = tmp_path / "state.pt"
    first = train(fresh_model(), mse_loss, regression_data(), steps=20, batch_size=16, progress=False,
                  checkpoint_path=ckpt, checkpoint_every=10)
    assert load_checkpoint(ckpt)["step"] == 20

    def must_not_run(model, batch, generator):
        raise AssertionError("a finished run was trained again")

    again = train(fresh_model(), must_not_run, regression_data(), steps=20, batch_size=16, progress=False,
                  checkpoint_path=ckpt)
    assert again.losses == first.losses and again.steps_done == 20
    assert torch.equal(again.model.weight, first.model.weight)
    assert torch.equal(again.ema_model.weight, first.ema_model.weight)


class _Interrupt(Exception):
    pass


def _stops_after(calls: int, loss_fn):
    """``loss_fn`` that raises ``_Interrupt`` on call ``calls + 1``, as Ctrl-C would mid-run."""
    count = {"n": 0}

    def loss(model, batch, generator):
        count["n"] += 1
        if count["n"] > calls:
            raise _Interrupt
        return loss_fn(model, batch, generator)

    return loss


def test_interrupted_run_with_dropout_resumes_bit_for_bit(tmp_path):
    """A network with dropout draws from torch's global generator too: resuming must restore it as well."""
    def dropout_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))

    torch.manual_seed(123)
    full = train(dropout_model(), mse_loss, regression_data(), steps=30, batch_size=16, progress=False)
    ckpt = tmp_path / "state.pt"
    torch.manual_seed(123)
    with pytest.raises(_Interrupt):
        train(dropout_model(), _stops_after(22, mse_loss), regression_data(), steps=30, batch_size=16,
              progress=False, checkpoint_path=ckpt, checkpoint_every=10)
    assert load_checkpoint(ckpt)["step"] == 20
    torch.manual_seed(999)                        # a new session: whatever the global generator holds now
    resumed = train(dropout_model(), mse_loss, regression_data(), steps=30, batch_size=16, progress=False,
                    checkpoint_path=ckpt)
    assert resumed.losses == full.losses
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema_model.state_dict().values(), full.ema_model.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_run_resumes_exactly(tmp_path):
    ckpt = tmp_path / "state.pt"
    full = train(fresh_model(), mse_loss, regression_data(), steps=30, batch_size=16, progress=False)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def loss_that_stops(model, batch, generator):
        calls["n"] += 1
        if calls["n"] > 17:
            raise Interrupt
        return mse_loss(model, batch, generator)

    with pytest.raises(Interrupt):
        train(fresh_model(), loss_that_stops, regression_data(), steps=30, batch_size=16, progress=False,
              checkpoint_path=ckpt, checkpoint_every=5)
    assert load_checkpoint(ckpt)["step"] == 15
    resumed = train(fresh_model(), mse_loss, regression_data(), steps=30, batch_size=16, progress=False,
                    checkpoint_path=ckpt)
    assert resumed.losses == pytest.approx(full.losses, abs=0)
    assert torch.equal(resumed.model.weight, full.model.weight)


def test_checkpoints_are_not_overwritten_and_bad_ones_explained(tmp_path):
    ckpt = tmp_path / "state.pt"
    train(fresh_model(), mse_loss, regression_data(), steps=5, progress=False, checkpoint_path=ckpt)
    with pytest.raises(FileExistsError, match="not overwritten"):
        train(fresh_model(), mse_loss, regression_data(), steps=5, progress=False, checkpoint_path=ckpt,
              resume=False)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="not a readable training checkpoint.*Delete it"):
        train(fresh_model(), mse_loss, regression_data(), steps=5, progress=False, checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="steps"):
        train(fresh_model(), mse_loss, regression_data(), steps=0)


def test_ema_follows_its_definition():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * model.weight)
    assert not ema.model.weight.requires_grad
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


def test_diffusion_loss_is_noise_prediction_mse():
    schedule = NoiseSchedule()
    images = torch.rand(8, 1, 28, 28)

    class Oracle(nn.Module):  # knows x0, so it can return the exact noise: the loss must be ~0
        def forward(self, xt, t):
            ab = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
            return (xt - ab.sqrt() * (images * 2 - 1)) / (1 - ab).sqrt()

    loss = diffusion_loss(schedule)(Oracle(), (images, torch.zeros(8)), torch.Generator().manual_seed(0))
    assert loss.item() < 1e-6
    zero = diffusion_loss(schedule)(lambda xt, t: torch.zeros_like(xt), images, torch.Generator().manual_seed(0))
    assert zero.item() == pytest.approx(1.0, abs=0.05)  # predicting nothing costs the noise's variance


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_diffusion_loss_for_x0_and_v_networks(prediction_type):
    """An oracle that knows x0 and outputs the exact x0 (or v) scores ~0; the noise oracle above does not."""
    schedule = NoiseSchedule()
    images = torch.rand(8, 1, 28, 28)
    x0 = images * 2 - 1

    def oracle(xt, t):
        noise = (xt - schedule.sqrt_alphas_cumprod[t].float().view(-1, 1, 1, 1) * x0) \
            / schedule.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return schedule.training_target(x0, noise, t, prediction_type)

    loss_fn = diffusion_loss(schedule, prediction_type)
    assert loss_fn(oracle, images, torch.Generator().manual_seed(0)).item() < 1e-6
    noise_oracle_loss = diffusion_loss(schedule)(oracle, images, torch.Generator().manual_seed(0))
    assert noise_oracle_loss.item() > 0.1          # the targets really differ
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        diffusion_loss(schedule, "x0")


def test_input_perturbation_noises_the_input_more_than_the_target_says():
    """gamma = 0 is the plain loss, draw for draw; with gamma > 0 an oracle that inverts x_t exactly is off by about
    gamma^2 (the extra noise it cannot tell from the target's), which it would not be if the target moved too."""
    schedule = NoiseSchedule()
    images = torch.rand(64, 1, 28, 28)

    def oracle(xt, t):      # the noise that made x_t, read off exactly
        ab = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (xt - ab.sqrt() * (images * 2 - 1)) / (1 - ab).sqrt()

    plain = diffusion_loss(schedule)(oracle, images, torch.Generator().manual_seed(0))
    assert diffusion_loss(schedule, input_perturbation=0.0)(oracle, images, torch.Generator().manual_seed(0)) == plain
    perturbed = diffusion_loss(schedule, input_perturbation=0.1)(oracle, images, torch.Generator().manual_seed(0))
    assert perturbed.item() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match="input_perturbation is a noise scale in"):
        diffusion_loss(schedule, input_perturbation=-0.1)


def test_training_time_survives_a_resumed_run(tmp_path):
    """Provenance: the seconds of a run interrupted and resumed add up (they live in the resumable state)."""
    import torch.nn as nn

    from course_lib.train import train

    model = nn.Linear(2, 1)
    data = (torch.randn(64, 2),)
    loss_fn = lambda m, batch, g: (m(batch[0]) ** 2).mean()
    first = train(model, loss_fn, data, steps=3, batch_size=8, checkpoint_path=tmp_path / "s.pt", checkpoint_every=3,
                  progress=False)
    assert first.seconds > 0
    resumed = train(nn.Linear(2, 1), loss_fn, data, steps=6, batch_size=8, checkpoint_path=tmp_path / "s.pt",
                    checkpoint_every=3, progress=False)
    assert resumed.steps_done == 6 and resumed.seconds > first.seconds


def test_a_non_finite_loss_stops_training_and_is_never_checkpointed(tmp_path):
    """Losses are read from the device every 10 steps (not every step, which would make the CPU wait for a GPU),
    so a NaN is caught a few steps late: with its step number, and before any checkpoint could store it."""
    calls = []

    def nan_at_step_13(model, batch, generator):
        calls.append(1)
        loss = mse_loss(model, batch, generator)
        return loss * float("nan") if len(calls) == 14 else loss

    ckpt = tmp_path / "state.pt"
    with pytest.raises(FloatingPointError, match="at step 13: lower lr"):
        train(fresh_model(), nan_at_step_13, regression_data(), steps=40, batch_size=16, progress=False,
              checkpoint_path=ckpt, checkpoint_every=15)
    assert not ckpt.exists()
    assert len(calls) <= 21                       # found within ten steps of the NaN

    recorded = train(fresh_model(), mse_loss, regression_data(), steps=37, batch_size=16, progress=False)
    assert len(recorded.losses) == 37 and all(isinstance(v, float) for v in recorded.losses)


def test_bfloat16_autocast_trains_the_float32_weights_and_unknown_precisions_are_refused():
    """precision="bfloat16" runs the forward pass in bfloat16 (so the run differs from float32's) while the
    weights and their EMA stay float32 and still learn."""
    data = regression_data()
    runs = {p: train(fresh_model(), mse_loss, data, steps=200, lr=0.05, warmup_steps=5, progress=False, precision=p)
            for p in ("float32", "bfloat16")}
    low, full = runs["bfloat16"], runs["float32"]
    assert all(p.dtype == torch.float32 for p in (*low.model.parameters(), *low.ema_model.parameters()))
    assert low.losses[-1] < 0.05 * low.losses[0]
    assert low.losses != full.losses          # autocast really ran: bfloat16 rounding changed the losses
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'bfloat16', got 'fp16'"):
        train(fresh_model(), mse_loss, data, steps=1, progress=False, precision="fp16")


def test_uniform_timesteps_are_the_ones_the_shipped_model_was_trained_on():
    """time_sampling="uniform" draws exactly what the loss drew before the option existed (the recipe reproduces)."""
    from course_lib.ddpm import sample_timesteps
    schedule = NoiseSchedule()
    assert torch.equal(sample_timesteps(64, schedule, torch.Generator().manual_seed(3)),
                       torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))


def test_logit_normal_timesteps_are_the_flow_models_noise_levels_at_equal_snr():
    """Each flow level sigma becomes the timestep whose SNR is nearest ((1 - sigma) / sigma)^2; most land below t = 500."""
    from course_lib.ddpm import sample_timesteps
    from course_lib.flow import sample_sigmas
    schedule = NoiseSchedule()
    t = sample_timesteps(20_000, schedule, torch.Generator().manual_seed(0), "logit_normal")
    sigma = sample_sigmas(20_000, torch.Generator().manual_seed(0), "logit_normal").double()
    target = 2 * (torch.log1p(-sigma) - torch.log(sigma))
    table = schedule.snr().log()
    gap = (table[t] - target).abs()
    assert (gap <= (table[(t + 1).clamp(max=999)] - target).abs()).all()
    assert (gap <= (table[(t - 1).clamp(min=0)] - target).abs()).all()
    assert 0.85 < (t < 500).float().mean().item() < 0.93            # uniform: half
    assert t.min() >= 0 and t.max() <= 999
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        diffusion_loss(schedule, time_sampling="cosine")


def test_building_the_diffusion_loss_draws_nothing_from_the_global_generator():
    """The recipe seeds, builds the loss, then builds the network: a draw in between would change its initial weights."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    for time_sampling in ("uniform", "logit_normal"):
        torch.manual_seed(0)
        diffusion_loss(NoiseSchedule(), time_sampling=time_sampling)
        assert torch.equal(torch.rand(3), expected)
