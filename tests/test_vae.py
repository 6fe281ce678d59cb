"""course_lib.vae: the reparameterisation trick, the KL term, shapes, clear errors, the scaling factor."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence as torch_kl

from course_lib.train import train
from course_lib.vae import (VAE, AutoEncoder, ConvVAE, DiagonalGaussian, autoencoder_loss, kl_divergence,
                            latent_scaling_factor, negative_elbo, psnr, reconstruction_nll, reparameterize, vae_loss)


def digits(n=8, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_reparameterize_has_the_right_distribution_and_gradients():
    mean = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(0.25)], requires_grad=True)
    z = reparameterize(mean.expand(200_000, 2), logvar.expand(200_000, 2), torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.01)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.01)
    z.sum().backward()                       # the point of the trick: gradients reach mean and logvar
    assert torch.allclose(mean.grad, torch.tensor([200_000.0, 200_000.0]))
    assert logvar.grad.abs().min() > 0


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(5, 4, 7, 7, generator=g), torch.randn(5, 4, 7, 7, generator=g)
    expected = torch_kl(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(kl_divergence(mean, logvar), expected, atol=1e-4)
    assert torch.equal(kl_divergence(torch.zeros(3, 2), torch.zeros(3, 2)), torch.zeros(3))   # the prior itself


def test_reconstruction_nll_is_bernoulli_log_likelihood_in_nats():
    x = (digits(3) > 0.5).float()
    logits = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    p = torch.sigmoid(logits)
    manual = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(logits, x), manual, rtol=1e-4)


@pytest.mark.parametrize("model, latent_shape", [(AutoEncoder(), (8, 2)), (VAE(), (8, 2)),
                                                 (ConvVAE(), (8, 4, 7, 7))])
def test_shapes_and_ranges(model, latent_shape):
    x = digits()
    logits, z_or_dist = model(x)
    assert logits.shape == (8, 1, 28, 28)
    z = z_or_dist if isinstance(z_or_dist, torch.Tensor) else z_or_dist.mean
    assert z.shape == latent_shape
    decoded = model.decode(torch.randn(latent_shape) * 10)
    assert decoded.shape == (8, 1, 28, 28) and decoded.min() >= 0 and decoded.max() <= 1


def test_bad_inputs_get_clear_errors():
    vae = ConvVAE()
    with pytest.raises(ValueError, match=r"^x must be digits as a \(B, 1, 28, 28\).*x\[None\]"):
        vae.encode(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match=r"^x values must be in \[0, 1\].*\(x \+ 1\) / 2"):
        vae.encode(torch.rand(2, 1, 28, 28) * 2 - 1)
    with pytest.raises(ValueError, match=r"^z must be latents of shape \(B, 4, 7, 7\)"):
        vae.decode(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"^z must be latents of shape \(B, 2\)"):
        VAE().decode(torch.randn(2, 3))
    with pytest.raises(ValueError, match="kl_weight"):
        vae_loss(-1.0)


def test_vae_loss_is_reconstruction_plus_weighted_kl():
    torch.manual_seed(0)
    model, x = VAE(), digits(4)
    parts = {}
    for w in (0.0, 1.0, 3.0):
        parts[w] = vae_loss(w)(model, (x, None), torch.Generator().manual_seed(5)).item()
    logits, dist = model(x, torch.Generator().manual_seed(5))
    recon, kl = reconstruction_nll(logits, x).mean().item(), dist.kl().mean().item()
    assert parts[0.0] == pytest.approx(recon, rel=1e-5)
    assert parts[3.0] == pytest.approx(recon + 3 * kl, rel=1e-5)
    assert negative_elbo(model, x, torch.Generator().manual_seed(5)) == pytest.approx(parts[1.0], rel=1e-5)


def test_diagonal_gaussian_clamps_extreme_logvar():
    dist = DiagonalGaussian(torch.zeros(2), torch.tensor([-100.0, 100.0]))
    assert torch.isfinite(dist.std).all() and torch.isfinite(dist.sample()).all()


def test_scaling_factor_gives_unit_variance():
    torch.manual_seed(0)
    vae, x = ConvVAE(), digits(64)
    scale = latent_scaling_factor(vae, x, torch.Generator().manual_seed(0))
    z = vae.encode(x).sample(torch.Generator().manual_seed(0)) * scale
    assert z.std().item() == pytest.approx(1.0, abs=1e-4)
    vae.latent_scale.fill_(scale)
    assert vae.scaling_factor == pytest.approx(scale) and "latent_scale" in vae.state_dict()


def test_psnr():
    x = torch.zeros(1, 1, 28, 28)
    assert psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-4)      # MSE 0.01 -> 20 dB
    assert psnr(x, x) == math.inf


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    x = (digits(64) > 0.7).float()
    before = autoencoder_loss(AutoEncoder(latent_dim=8, hidden=(64,)), (x, None), None).item()
    torch.manual_seed(0)
    result = train(AutoEncoder(latent_dim=8, hidden=(64,)), autoencoder_loss, (x, torch.zeros(64)), steps=300,
                   batch_size=32, lr=3e-3, progress=False)
    after = autoencoder_loss(result.model, (x, None), None).item()
    assert after < 0.5 * before
    assert F.binary_cross_entropy(result.model.decode(result.model.encode(x)), x).item() < 0.35
