"""Cross-attention, the text-conditioned UNet and the latent-diffusion pipeline, on small random models.

The shipped model's quality is tested in test_shipped.py; here every property must hold for
any weights: shapes, maths against PyTorch, where the prompt enters, guidance, img2img, errors.
"""

import pytest
import torch
import torch.nn.functional as F

from course_lib import checks
from course_lib.attention import MultiHeadAttention, SpatialTransformer, record_attention
from course_lib.clip import CLIP
from course_lib.ldm import (DEFAULT_GUIDANCE_INTERVAL, EVERY_STEP, LatentDiffusionPipeline, anneal_condition,
                             guided_noise, ldm_training_loss, rescale_noise_cfg, word_attention_maps)
from course_lib.schedule import NoiseSchedule
from course_lib.tokenizer import UnknownWordError
from course_lib.unet import UNet
from course_lib.vae import ConvVAE

SMALL_UNET = dict(in_channels=4, out_channels=4, base_channels=16, channel_mults=(1, 2), attention_levels=(True, True),
                  self_attention_levels=(False, True), num_heads=2, context_dim=16, pad_to_multiple=True)


def _wake(module: torch.nn.Module, std: float = 0.2) -> None:
    """Replace the zero-initialised output layers (which hide everything at first) by random ones."""
    for name, p in module.named_parameters():
        if "proj_out" in name or "conv_out" in name:
            torch.nn.init.normal_(p, std=std)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, text_width=16, text_layers=1, text_heads=2, image_channels=8, image_width=16)
    unet = UNet(**SMALL_UNET)
    _wake(unet)
    return LatentDiffusionPipeline(unet, ConvVAE(latent_channels=4, channels=8), clip.text_encoder, clip.tokenizer)


def test_cross_attention_matches_pytorch_and_records_weights():
    torch.manual_seed(0)
    attn = MultiHeadAttention(12, num_heads=3, context_dim=20)
    x, context = torch.randn(2, 49, 12), torch.randn(2, 5, 20)
    split = lambda z: z.view(2, z.shape[1], 3, 4).transpose(1, 2)
    expected = F.scaled_dot_product_attention(split(attn.to_q(x)), split(attn.to_k(context)), split(attn.to_v(context)))
    expected = attn.to_out(expected.transpose(1, 2).reshape(2, 49, 12))
    fused = attn(x, context)
    attn.store_weights = True               # the from-scratch path, which also keeps the weights
    written_out = attn(x, context)
    assert torch.allclose(fused, expected, atol=1e-5) and torch.allclose(written_out, expected, atol=1e-5)
    assert attn.last_weights.shape == (2, 3, 49, 5)            # every pixel weighs the 5 text tokens
    assert torch.allclose(attn.last_weights.sum(-1), torch.ones(2, 3, 49), atol=1e-6)


def test_spatial_transformer_reads_the_text_and_starts_as_identity():
    torch.manual_seed(0)
    block = SpatialTransformer(16, context_dim=8, num_heads=2, self_attention=False)
    x, context = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 8)
    assert torch.equal(block(x, context), x)                   # zero-initialised proj_out: a safe start
    assert block.attn1 is None
    _wake(block)
    other = context.clone()
    other[:, 2] += 3                                            # change one text token...
    assert (block(x, context) - block(x, other)).abs().mean() > 1e-3   # ...and every pixel hears it
    with pytest.raises(ValueError, match="text token embeddings"):
        block(x, torch.randn(2, 5, 7))


def test_conditional_unet_pads_7x7_needs_text_and_trains_every_parameter():
    torch.manual_seed(0)
    unet = UNet(**SMALL_UNET)
    _wake(unet)
    z, text = torch.randn(3, 4, 7, 7), torch.randn(3, 12, 16)
    out = unet(z, torch.tensor([1, 500, 999]), encoder_hidden_states=text)
    assert out.shape == z.shape
    # the prompt reaches the prediction
    assert (unet(z, 10, text) - unet(z, 10, text.flip(0))).abs().mean() > 1e-3
    unet(z, torch.tensor([1, 2, 3]), text).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unet.parameters())
    with pytest.raises(ValueError, match="text-conditioned"):
        unet(z, 10)
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        unet(z, 10, torch.randn(3, 12, 15))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(base_channels=16)(torch.randn(1, 1, 28, 28), 5, torch.randn(1, 12, 16))
    with pytest.raises(ValueError, match="pad_to_multiple"):
        UNet(base_channels=16)(torch.randn(1, 1, 7, 7), 5)


def test_record_attention_captures_every_cross_attention_layer_and_cleans_up():
    torch.manual_seed(0)
    unet = UNet(**SMALL_UNET)
    with record_attention(unet) as maps:
        unet(torch.randn(2, 4, 7, 7), 5, torch.randn(2, 12, 16))
    cross = [n for n, m in unet.named_modules() if isinstance(m, MultiHeadAttention) and m.is_cross_attention]
    assert sorted(maps) == sorted(cross) and len(cross) == 7      # 2 down, 1 middle, 4 up
    shapes = {tuple(w[0].shape) for w in maps.values()}
    assert shapes == {(2, 2, 64, 12), (2, 2, 16, 12)}            # 8x8 and 4x4 positions, 12 tokens
    assert all(not m.store_weights for m in unet.modules() if isinstance(m, MultiHeadAttention))
    with record_attention(unet, kind="self") as self_maps:
        unet(torch.randn(2, 4, 7, 7), 5, torch.randn(2, 12, 16))
    assert not set(self_maps) & set(cross) and {tuple(w[0].shape) for w in self_maps.values()} == {(2, 2, 16, 16)}
    assert all(torch.allclose(w[0].sum(-1), torch.ones(2, 2, 16)) for w in self_maps.values())
    with pytest.raises(ValueError, match="kind must be"):
        with record_attention(unet, kind="both"):
            pass


def test_guided_noise_and_its_check():
    uncond, cond = torch.zeros(1, 4, 7, 7), torch.ones(1, 4, 7, 7)
    assert torch.equal(guided_noise(uncond, cond, 0.0), uncond)
    assert torch.equal(guided_noise(uncond, cond, 1.0), cond)
    assert torch.equal(guided_noise(uncond, cond, 3.0), 3 * cond)
    assert checks.check_classifier_free_guidance(guided_noise)
    assert not checks.check_classifier_free_guidance(lambda u, c, s: c + s * (c - u))
    assert "direction" in checks.check_classifier_free_guidance(lambda u, c, s: u + s * (u - c)).message


def test_cross_attention_and_img2img_checks_catch_the_usual_mistakes():
    def right(image, text, w_q, w_k, w_v):
        q, k, v = image @ w_q, text @ w_k, text @ w_v
        return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v

    def unscaled(image, text, w_q, w_k, w_v):
        q, k, v = image @ w_q, text @ w_k, text @ w_v
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    def weights_only(image, text, w_q, w_k, w_v):
        q, k = image @ w_q, text @ w_k
        return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)

    def not_written(*args):
        raise NotImplementedError()

    assert checks.check_cross_attention(right)
    assert "sqrt(d)" in checks.check_cross_attention(unscaled).message
    assert "values" in checks.check_cross_attention(weights_only).message
    assert not checks.check_cross_attention(not_written)

    assert checks.check_img2img_timesteps(lambda ts, s: ts[len(ts) - int(len(ts) * s):])
    assert "least noisy" in checks.check_img2img_timesteps(lambda ts, s: ts[:int(len(ts) * s)]).message
    assert not checks.check_img2img_timesteps(lambda ts, s: ts[int(len(ts) * s):])


def test_training_loss_never_trains_the_text_encoder_and_drops_captions():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, text_width=16, text_layers=1, text_heads=2, image_channels=8, image_width=16)
    unet = UNet(**SMALL_UNET)
    seen = []

    def make_caption(digit, codes, generator):
        return f"a handwritten {['zero', 'one'][digit]}"

    tokenizer = clip.tokenizer
    original_empty = tokenizer.empty
    tokenizer.empty = lambda n: (seen.append(n), original_empty(n))[1]
    loss_fn = ldm_training_loss(clip.text_encoder, tokenizer, NoiseSchedule("linear"), 1.0, make_caption, 0.25)
    batch = (torch.randn(400, 4, 7, 7), torch.ones(400, 4, 7, 7) * 0.1, torch.randint(0, 2, (400,)),
             torch.zeros(400, 3, dtype=torch.long))
    loss = loss_fn(unet, batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is None for p in clip.text_encoder.parameters())
    assert 0.17 < sum(seen) / 400 < 0.33                         # about a quarter dropped to the empty text
    with pytest.raises(ValueError, match="uncond_prob"):
        ldm_training_loss(clip.text_encoder, tokenizer, NoiseSchedule("linear"), 1.0, make_caption, 1.0)


def test_pipeline_shapes_range_seeds_and_prompt_lists(pipe):
    a = pipe("a thick seven", num_inference_steps=3, seed=1)
    assert a.shape == (1, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, pipe("a thick seven", num_inference_steps=3, seed=1))       # same seed, same digit
    assert not torch.equal(a, pipe("a thick seven", num_inference_steps=3, seed=2))
    b = pipe(["a thick seven", "a thin one"], num_inference_steps=3, num_images_per_prompt=2)
    assert b.shape == (4, 1, 28, 28)
    assert pipe("a one", num_inference_steps=3, output_type="latent").shape == (1, 4, 7, 7)
    # a negative prompt replaces the empty text of guidance, so it changes the result (10 steps: two of them,
    # t = 199 and 99, lie in the default interval; 3 steps, t = 999, 666, 333, guide none)
    assert not torch.equal(pipe("a seven", num_inference_steps=10),
                           pipe("a seven", num_inference_steps=10, negative_prompt="a thick seven"))
    assert torch.equal(pipe("a seven", num_inference_steps=3),
                       pipe("a seven", num_inference_steps=3, negative_prompt="a thick seven"))


def test_guidance_scale_one_skips_the_unconditional_half(pipe):
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    try:
        pipe("a seven", num_inference_steps=4, guidance_scale=1.0)
        assert calls == [1] * 4
        calls.clear()
        pipe("a seven", num_inference_steps=4, guidance_scale=3.0, guidance_interval=EVERY_STEP)
        assert calls == [2] * 4                                 # conditional and unconditional in one batch
    finally:
        hook.remove()


def test_guidance_interval_guides_only_the_steps_inside_it(pipe):
    calls, steps = [], []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    try:
        pipe("a seven", num_inference_steps=10, guidance_scale=3.0, guidance_interval=(0.3, 0.7),
             callback=lambda i, t, *_: steps.append(t))
    finally:
        hook.remove()
    # timesteps 999, 899, ..., 99: fractions 1.0, 0.9, ..., 0.1; guided (two passes) exactly where 0.3 <= t/999 <= 0.7
    assert calls == [2 if 0.3 <= t / 999 <= 0.7 else 1 for t in steps] and calls.count(2) == 4
    # the default is the measured interval; an interval no step falls in is the conditional model alone
    assert torch.equal(pipe("a seven", num_inference_steps=4, guidance_interval=DEFAULT_GUIDANCE_INTERVAL),
                       pipe("a seven", num_inference_steps=4))
    assert not torch.equal(pipe("a seven", num_inference_steps=10, guidance_interval=EVERY_STEP),
                           pipe("a seven", num_inference_steps=10))
    assert torch.equal(pipe("a seven", num_inference_steps=4, guidance_scale=3.0, guidance_interval=(0.5, 0.6)),
                       pipe("a seven", num_inference_steps=4, guidance_scale=1.0))


def test_cfg_rescale_matches_the_conditional_scale():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 3, 4, 7, 7, generator=g).unbind(0)
    cfg = guided_noise(uncond, 0.5 * cond, 7.0)
    assert torch.equal(rescale_noise_cfg(cfg, cond, 0.0), cfg)
    full = rescale_noise_cfg(cfg, cond, 1.0)
    assert torch.allclose(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))        # each image: the cond's std
    unit = lambda x: x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(unit(full), unit(cfg),
                          atol=1e-5)                                                 # only the scale changes
    assert torch.allclose(rescale_noise_cfg(cfg, cond, 0.7), 0.7 * full + 0.3 * cfg)


def test_condition_annealing_fades_the_prompt_in_as_the_noise_falls():
    cond = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(0)) * 2 + 1
    g = lambda: torch.Generator().manual_seed(1)
    assert anneal_condition(cond, 0.9, None, g()) is cond                  # off
    assert anneal_condition(cond, 0.4, (0.4, 0.9), g()) is cond            # at or below low: the prompt itself
    for t in (0.5, 0.7, 0.9, 1.0):
        out = anneal_condition(cond, t, (0.4, 0.9), g())
        # rescaled to each prompt's own mean and standard deviation
        assert torch.allclose(out.mean((1, 2)), cond.mean((1, 2)), atol=1e-5)
        assert torch.allclose(out.std((1, 2)), cond.std((1, 2)), atol=1e-5)
    similarity = [F.cosine_similarity((anneal_condition(cond, t, (0.4, 0.9), g()) - cond.mean((1, 2), keepdim=True))
                                      .flatten(1), (cond - cond.mean((1, 2), keepdim=True)).flatten(1)).mean().item()
                  for t in (0.5, 0.7, 0.85, 0.95)]
    assert similarity[0] > similarity[1] > similarity[2] > 0.1 and abs(similarity[3]) < 0.2   # noise alone above high
    # above high the prompt is gone: two different prompts give the same embedding for the same noise
    assert torch.allclose(anneal_condition(cond, 0.95, (0.4, 0.9), g()),
                          anneal_condition(cond * 3 - 2, 0.95, (0.4, 0.9), g()) / 3 + 2 / 3, atol=1e-5)


def test_pipeline_condition_annealing_changes_only_the_noisy_steps_and_is_seeded(pipe):
    images = lambda **kw: pipe("a seven", num_inference_steps=5, guidance_scale=3.0, **kw)
    annealed = images(condition_annealing=(0.4, 0.9))
    assert torch.equal(annealed, images(condition_annealing=(0.4, 0.9)))              # the seed fixes the noise
    assert not torch.equal(annealed, images(condition_annealing=None))
    assert torch.equal(images(condition_annealing=(1.0, 1.0)), images(condition_annealing=None))  # never annealed


def test_img2img_strength_runs_the_right_share_of_steps(pipe):
    digits = torch.rand(2, 1, 28, 28)
    steps = []
    pipe("a seven", image=digits, strength=0.4, num_inference_steps=10, callback=lambda i, t, *_: steps.append(t))
    assert len(steps) == 4 and steps[-1] == 99                  # the last 4 of 999, 899, ..., 99
    # strength 0 changes nothing: the digit comes back through the VAE
    back = pipe("a seven", image=digits, strength=0.0, num_inference_steps=10)
    with torch.no_grad():
        assert torch.allclose(back, pipe.vae.decode(pipe.vae.encode(digits).mean).clamp(0, 1), atol=1e-6)
    assert pipe("a seven", image=digits[:1], strength=1.0, num_inference_steps=2).shape == (1, 1, 28, 28)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompt="a thikc seven"), "not in the vocabulary"),
    (dict(prompt=""), "is empty"),
    (dict(prompt=[]), "non-empty list"),
    (dict(prompt=7), "string"),
    (dict(prompt="a seven", num_inference_steps=0), "num_inference_steps"),
    (dict(prompt="a seven", num_inference_steps=2.5), "num_inference_steps"),
    (dict(prompt="a seven", guidance_scale=-1), "guidance_scale"),
    (dict(prompt="a seven", guidance_scale=float("nan")), "guidance_scale"),
    (dict(prompt="a seven", seed=-3), "seed"),
    (dict(prompt="a seven", strength=1.5, image=torch.rand(1, 1, 28, 28)), "strength"),
    (dict(prompt="a seven", image=torch.rand(28, 28)), r"\(B, 1, 28, 28\)"),
    (dict(prompt="a seven", image=torch.rand(1, 1, 28, 28) * 2 - 1), r"\[0, 1\]"),
    (dict(prompt=["a seven", "a one"], image=torch.rand(3, 1, 28, 28)), "one per image"),
    (dict(prompt=["a seven", "a one"], negative_prompt=["a one"] * 3), "negative_prompt"),
    (dict(prompt="a seven", output_type="pil"), "output_type"),
    (dict(prompt="a seven", guidance_rescale=1.5), "guidance_rescale"),
    (dict(prompt="a seven", guidance_interval=(0.8, 0.2)), "must not exceed"),
    (dict(prompt="a seven", guidance_interval=0.5), "pair"),
    (dict(prompt="a seven", guidance_interval=(-0.1, 0.5)), "guidance_interval low"),
    (dict(prompt="a seven", condition_annealing=(0.9, 0.4)), "condition_annealing low"),
    (dict(prompt="a seven", condition_annealing=0.5), "condition_annealing must be a pair"),
])
def test_pipeline_rejects_bad_arguments_with_a_sentence(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**{"num_inference_steps": 2, **kwargs})


def test_unknown_word_error_suggests_the_right_word(pipe):
    with pytest.raises(UnknownWordError, match="thick"):
        pipe("a thikc seven", num_inference_steps=2)


def test_word_attention_maps(pipe):
    image, words, maps = word_attention_maps(pipe, "a thick seven", num_inference_steps=3)
    assert words == ["<start>", "a", "thick", "seven", "<end>", "<pad>"]
    assert image.shape == (1, 1, 28, 28) and maps.shape == (6, 7, 7)
    # at every latent position the shares of all tokens (padding included) add up to 1
    assert torch.allclose(maps.sum(0), torch.ones(7, 7), atol=1e-5) and (maps >= 0).all()
