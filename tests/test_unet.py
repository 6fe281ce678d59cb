"""course_lib.unet and course_lib.attention: shapes, conditioning on t, and attention maths."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import SelfAttention2d, scaled_dot_product_attention
from course_lib.unet import UNet, deepen, timestep_embedding


def test_attention_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 49, 8, generator=g) for _ in range(3))
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 49))
    with pytest.raises(ValueError, match="same last dimension"):
        scaled_dot_product_attention(q, k[..., :4], v)


def test_self_attention_block_mixes_positions():
    block = SelfAttention2d(16, num_heads=4)
    torch.nn.init.normal_(block.to_out.weight)
    x = torch.randn(1, 16, 7, 7)
    block.store_weights = True
    y = block(x)
    assert y.shape == x.shape and block.last_weights.shape == (1, 4, 49, 49)
    # changing one pixel changes the output everywhere: every position attends to every other
    x2 = x.clone()
    x2[0, :, 0, 0] += 5
    changed = (block(x2) - y).abs().sum(1)[0]
    assert (changed > 1e-4).all()


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 500, 999]), 32)
    assert emb.shape == (4, 32)
    assert torch.allclose(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    assert (emb[1] - emb[0]).norm() < (emb[2] - emb[0]).norm()   # near timesteps, near vectors
    with pytest.raises(ValueError, match="^dim, the embedding dimension, must be even"):
        timestep_embedding(torch.tensor([1]), 7)


def test_unet_shapes_and_time_conditioning():
    torch.manual_seed(0)
    model = UNet(base_channels=16, channel_mults=(1, 2, 4))
    for p in model.conv_out.parameters():  # the zero-initialised output layer would hide everything
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 1, 28, 28)
    out = model(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    # the same image at different t gives different predictions: t reaches the network
    same = x[:1].expand(2, -1, -1, -1)
    a, b = model(same, torch.tensor([10, 900]))
    assert (a - b).abs().mean() > 1e-3
    assert torch.allclose(model(x[:1], 10), model(x[:1], torch.tensor([10])))
    # every parameter gets a gradient
    model(x, torch.tensor([1, 2, 3])).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_unet_starts_by_predicting_zero_and_rejects_bad_shapes():
    model = UNet(base_channels=16)
    assert model(torch.randn(2, 1, 28, 28), 5).abs().max() == 0
    with pytest.raises(ValueError, match=r"^sample must be \(B, 1, H, W\)"):
        model(torch.randn(2, 3, 28, 28), 5)
    with pytest.raises(ValueError, match="^sample's H and W must be divisible by 4"):
        model(torch.randn(2, 1, 30, 30), 5)
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(channel_mults=(1, 2), attention_levels=(False, False, True))


@pytest.mark.parametrize("config", [
    dict(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, attention_levels=(False, False, True)),
    dict(in_channels=4, out_channels=4, base_channels=16, channel_mults=(1, 2), num_res_blocks=2,
         attention_levels=(True, True), self_attention_levels=(False, True), num_heads=2, context_dim=8,
         pad_to_multiple=True)])
def test_deepen_adds_a_block_per_level_and_keeps_the_function(config):
    """The grown U-Net computes what the trained one computed (conv_out randomised: a fresh U-Net outputs zeros, which
    any wrong wiring would also give), has more parameters, and its new blocks learn: they get gradients."""
    torch.manual_seed(0)
    unet = UNet(**config)
    for p in unet.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, unet.in_channels, 28 if unet.in_channels == 1 else 7, 28 if unet.in_channels == 1 else 7)
    t = torch.tensor([3, 400, 999])
    context = torch.randn(3, 5, 8) if unet.context_dim else None
    before = unet(x, t, context)
    deeper = deepen(unet)
    k = config["num_res_blocks"]
    assert deeper.config == {**unet.config, "num_res_blocks": k + 1}
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in unet.parameters())
    assert before.abs().max() > 0.1
    assert torch.allclose(deeper(x, t, context), before, atol=1e-5)
    assert torch.equal(unet(x, t, context), before)                  # the original is left as it was
    deeper(x, t, context).square().mean().backward()
    assert deeper.down[0]["blocks"][2 * k].conv2.weight.grad.abs().sum() > 0
    assert deeper.up[0]["blocks"][2].conv2.weight.grad.abs().sum() > 0
