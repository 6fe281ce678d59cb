"""The shipped checkpoints: present, verified, small, and as good as the course says."""

import pytest
import torch

from course_lib import pipelines, pretrained
from course_lib.captions import HELD_OUT_COMBINATION, attribute_prompt, class_prompt
from course_lib.captions import attribute_matches
from course_lib.clip import embed_images, linear_probe, retrieval_precision, zero_shot_classify
from course_lib.data import load_mnist
from course_lib.flow import DiffusionAsFlow, FlowMatchingPipeline
from course_lib.ldm import DEFAULT_CONDITION_ANNEALING, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_SCALE, EVERY_STEP
from course_lib.schedule import NoiseSchedule
from course_lib.metrics import classifier_features, frechet_distance, load_classifier, predict, real_vs_real_floor
from course_lib.tokenizer import UnknownWordError
from course_tools.bench import guidance_row, recommended_guidance, results


@pytest.mark.parametrize("name", sorted(pretrained.CHECKPOINTS))
def test_checkpoint_verifies_and_is_small(name):
    path = pretrained.checkpoint_path(name)            # raises if missing or the checksum differs
    assert path.stat().st_size < 5 * 2**20
    _, config, info = pretrained.read_weights(path)
    assert config and info.get("script", "").startswith("scripts/")


def test_classifier_is_99_percent_on_heldout_digits():
    heldout = load_mnist("test")   # never seen in training
    accuracy = (predict(load_classifier(), heldout.images) == heldout.labels).float().mean().item()
    assert accuracy >= 0.99, accuracy


@pytest.fixture(scope="module")
def ddpm():
    return pipelines.load("ddpm", device="cpu")


def test_ddpm_pipeline_contract(ddpm):
    a = ddpm(batch_size=4, num_inference_steps=10, sampler="ddim", seed=3, progress=False)
    assert a.shape == (4, 1, 28, 28) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, ddpm(batch_size=4, num_inference_steps=10, sampler="ddim", seed=3, progress=False))


def test_ddpm_makes_real_looking_digits_of_every_kind(ddpm):
    """80 DDIM-20 samples are within 2x of the real-vs-real classifier-FID floor (same sample size), and all
    ten digits appear. (The classifier's confidence alone is no test: it is 100% sure about pure static.)"""
    classifier = load_classifier()
    heldout = classifier_features(classifier, load_mnist("test").images)
    floor = real_vs_real_floor(classifier, load_mnist("train").images, heldout, 80)
    samples = ddpm(batch_size=80, num_inference_steps=20, sampler="ddim", seed=0, progress=False)
    fid = frechet_distance(classifier_features(classifier, samples), heldout)
    assert fid < 2 * floor, (fid, floor)                                      # measured: 28.2 vs floor 17.8
    assert len(set(predict(classifier, samples).tolist())) == 10
    # the same strokes mirrored and turned are no longer digits: the 2x bar does tell them apart
    turned = samples.flip(-1).transpose(-1, -2)
    assert frechet_distance(classifier_features(classifier, turned), heldout) > 2 * floor


# --- notebook 03's autoencoders, measured on held-out digits ---

@pytest.fixture
def heldout_digits():
    return load_mnist("train"), load_mnist("test")


def test_vae2d_map_sorts_digits_and_explains_heldout_ones(heldout_digits):
    from sklearn.neighbors import KNeighborsClassifier

    from course_lib.vae import VAE, negative_elbo

    train_set, heldout = heldout_digits
    vae2d, info = pretrained.load_model("vae2d", VAE)
    with torch.no_grad():
        z_train, z_heldout = vae2d.encode(train_set.images).mean, vae2d.encode(heldout.images).mean
    knn = KNeighborsClassifier(n_neighbors=10).fit(z_train.numpy(), train_set.labels.numpy())
    assert knn.score(z_heldout.numpy(), heldout.labels.numpy()) >= 0.80
    nelbo = negative_elbo(vae2d, heldout.images, torch.Generator().manual_seed(0))
    assert 100 < nelbo < 1.1 * info["final_loss_avg100"] + 10    # nats per digit; not far from the training loss


def test_spatial_vae_keeps_the_digit(heldout_digits):
    from course_lib.vae import psnr

    _, heldout = heldout_digits
    vae = pipelines.load("vae", device="cpu")
    with torch.no_grad():
        dist = vae.encode(heldout.images)
        rebuilt = vae.decode(dist.mean)
        scaled = dist.sample(torch.Generator().manual_seed(0)) * vae.scaling_factor
    assert dist.mean.shape == (len(heldout), 4, 7, 7) and rebuilt.shape == heldout.images.shape
    assert 0 <= rebuilt.min() and rebuilt.max() <= 1
    accuracy = (predict(load_classifier(), rebuilt) == heldout.labels).float().mean().item()
    assert accuracy >= 0.97, accuracy
    assert psnr(rebuilt, heldout.images) > 15
    assert abs(scaled.std().item() - 1) < 0.1       # the measured factor really gives unit variance on unseen digits


def test_only_the_vae_can_be_sampled_from_the_standard_normal(heldout_digits):
    """Notebook 03's lesson, measured: N(0, I) points decode to realistic digits for the VAE, not the autoencoder."""
    from course_lib.metrics import classifier_features, frechet_distance
    from course_lib.vae import VAE, AutoEncoder

    _, heldout = heldout_digits
    classifier = load_classifier()
    reference = classifier_features(classifier, heldout.images)
    fids = {}
    for name, cls in [("ae2d", AutoEncoder), ("vae2d", VAE)]:
        model, _ = pretrained.load_model(name, cls)
        with torch.no_grad():
            images = model.decode(torch.randn(2000, 2, generator=torch.Generator().manual_seed(0)))
        fids[name] = frechet_distance(classifier_features(classifier, images), reference)
    assert fids["vae2d"] < 0.75 * fids["ae2d"], fids


# --- notebook 04's CLIP, measured on held-out digits ---

@pytest.fixture(scope="module")
def clip():
    return pipelines.load("clip", device="cpu")


def test_clip_pipeline_contract(clip):
    text = clip.encode_text(["a thick seven", "the digit 1, written small"])
    image = clip.encode_image(torch.rand(3, 1, 28, 28))
    assert text.shape == (2, 64) and image.shape == (3, 64)
    assert torch.allclose(text.norm(dim=1), torch.ones(2)) and torch.allclose(image.norm(dim=1), torch.ones(3))
    assert not text.requires_grad                        # loaded frozen, ready for latent diffusion
    with pytest.raises(UnknownWordError, match="'hat'"):
        clip.encode_text(["a seven hat"])


def test_clip_targets_on_heldout_digits(clip):
    """Issue 5's targets: zero-shot >= 97%, linear probe >= 98%, thick/thin retrieval >= 90% (seen combinations)."""
    train, heldout = load_mnist("train"), load_mnist("test")
    embeddings = embed_images(clip, heldout.images)
    predicted = zero_shot_classify(clip, embeddings, [class_prompt(d) for d in range(10)])
    assert (predicted == heldout.labels).float().mean() >= 0.97
    assert linear_probe(embed_images(clip, train.images), train.labels, embeddings, heldout.labels) >= 0.98
    seen = [retrieval_precision(clip, attribute_prompt(word, d), embeddings,
                                attribute_matches(clip.thresholds, heldout.images, heldout.labels, d, word))
            for word in ("thick", "thin") for d in range(10) if (word, d) != HELD_OUT_COMBINATION]
    assert sum(seen) / len(seen) >= 0.9, seen


@pytest.fixture(scope="module")
def ldm():
    return pipelines.load("ldm", device="cpu")


def test_ldm_pipeline_contract(ldm):
    images = ldm(["a thick seven", "a thin one"], num_inference_steps=5, seed=0)
    assert images.shape == (2, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, ldm(["a thick seven", "a thin one"], num_inference_steps=5, seed=0))
    assert ldm.info["script"] == "scripts/train.py ldm" and ldm.thresholds.low["thickness"]
    with pytest.raises(UnknownWordError, match="thick"):
        ldm("a thikc seven")


def test_ldm_draws_the_asked_digit_and_thickness():
    """A small version of bench/ldm_bench.py's targets: 20 steps instead of 50, 10-20 samples per prompt."""
    ldm, classifier = pipelines.load("ldm", device="cpu"), load_classifier()
    images = ldm([class_prompt(d) for d in range(10)], num_images_per_prompt=10, num_inference_steps=20, seed=1)
    asked = torch.arange(10).repeat_interleave(10)
    assert (predict(classifier, images) == asked).float().mean() >= 0.95
    # without the prompt (guidance scale 0 at every step: the unconditional model), the digit is left to chance
    unguided = ldm([class_prompt(d) for d in range(10)], num_images_per_prompt=10, num_inference_steps=20, seed=1,
                   guidance_scale=0.0, guidance_interval=EVERY_STEP)
    assert (predict(classifier, unguided) == asked).float().mean() < 0.5
    for d in (1, 4, 8):
        thick = ldm(attribute_prompt("thick", d), num_images_per_prompt=10, num_inference_steps=20, seed=2)
        thin = ldm(attribute_prompt("thin", d), num_images_per_prompt=10, num_inference_steps=20, seed=2)
        assert (ldm.thresholds.side("thickness", thick, d) == 1).float().mean() >= 0.8
        assert (ldm.thresholds.side("thickness", thin, d) == -1).float().mean() >= 0.8


def test_img2img_keeps_the_input_at_low_strength_and_follows_the_prompt_at_high(ldm):
    heldout = load_mnist("test")
    sevens = heldout.images[heldout.labels == 7][:10]
    classifier = load_classifier()
    # the default guides the least noisy fifth of the timeline, hard (scale 6): 0.1 already turns about a third of
    # the sevens into twos, so "low" is 0.05 here (one step, t = 49)
    low = ldm("a handwritten two", image=sevens, strength=0.05, num_inference_steps=20, seed=0)
    high = ldm("a handwritten two", image=sevens, strength=1.0, num_inference_steps=20, seed=0)
    assert (low - sevens).abs().mean() < (high - sevens).abs().mean()
    assert (predict(classifier, low) == 7).float().mean() >= 0.8
    assert (predict(classifier, high) == 2).float().mean() >= 0.8


def test_flow_model_draws_every_digit_in_eight_euler_steps():
    """The shipped flow-matching model (notebook 07): deterministic, and its 8-step digits are digits of every kind."""
    flow = pipelines.load("flow", device="cpu")
    a = flow(batch_size=200, num_inference_steps=8, sampler="euler", seed=0, progress=False)
    assert a.shape == (200, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a[:4], flow(batch_size=200, num_inference_steps=8, seed=0, progress=False)[:4])
    classifier = load_classifier()
    shares = torch.bincount(predict(classifier, a), minlength=10).float() / len(a)
    assert (shares > 0.03).all(), shares          # every class drawn (a collapsed model fails this)
    with torch.no_grad():
        heldout = load_mnist("test").images[:200]            # the held-out digits
        features = classifier_features(classifier, a), classifier_features(classifier, heldout)
        noise = classifier_features(classifier, torch.rand(200, 1, 28, 28))
    # far closer to real digits than noise is (the fully trained model is measured properly by bench/flow_bench.py)
    assert frechet_distance(*features) < 0.2 * frechet_distance(noise, features[1])


def test_reflowed_model_is_straighter_than_its_teacher():
    """The shipped reflow model (notebook 07): its 2-step digits are digits of every kind, and one Euler step lands
    closer to its own 16-step end point than the teacher's does (the point of reflow: straighter paths)."""
    flow, reflow = pipelines.load("flow", device="cpu"), pipelines.load("reflow", device="cpu")
    assert reflow.info["teacher"].endswith(pretrained.CHECKPOINTS["flow"][1][:12])
    two_steps = reflow(batch_size=200, num_inference_steps=2, seed=0, progress=False)
    shares = torch.bincount(predict(load_classifier(), two_steps), minlength=10).float() / len(two_steps)
    assert (shares > 0.03).all(), shares
    noise = torch.randn(50, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    gap = {name: (pipe.solve(noise, 1, progress=False) - pipe.solve(noise, 16, progress=False)).flatten(1).norm(dim=1)
           .mean().item() for name, pipe in (("flow", flow), ("reflow", reflow))}
    assert gap["reflow"] < 0.5 * gap["flow"], gap


@pytest.mark.parametrize("key, name", [("flow", "flow"), ("ddpm on flow clock", "ddpm")])
def test_searched_levels_follow_each_models_own_ode_better_than_even_ones(key, name):
    """bench/flow_bench.py's searched levels (notebook 07, course_lib.step_search) belong to the shipped checkpoint,
    and on fresh noise 8 Euler steps on them land closer to the model's own fine solve than 8 evenly spaced steps."""
    stored = results("flow")["searched_levels"][key]
    assert stored["checkpoint_sha256"] == pretrained.CHECKPOINTS[name][1]
    pipe = pipelines.load(name, device="cpu")
    if name == "ddpm":                                # the DDPM's network driven as a flow, as the bench does
        pipe = FlowMatchingPipeline(DiffusionAsFlow(pipe.unet, NoiseSchedule("linear"), prediction_type=pipe.prediction_type))
    noise = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    fine = pipe.solve(noise, 50, sampler="heun", progress=False)
    error = {label: (pipe.solve(noise, progress=False, **how) - fine).pow(2).mean().item()
             for label, how in (("even", {"num_inference_steps": 8}), ("searched", {"sigmas": stored["sigmas"]["8"]}))}
    assert error["searched"] < 0.8 * error["even"], error      # measured: 0.62x (flow), 0.44x (DDPM)


def test_the_default_guidance_is_the_one_the_measurements_pick():
    """course_lib.ldm's default is what course_tools.bench.recommended_guidance picks from bench/guidance_bench.py's
    stored measurements of the shipped LDM (same checkpoint), so the library, the bench and notebook 06 agree."""
    guidance = results("guidance")
    assert guidance["checkpoint_sha256"] == pretrained.CHECKPOINTS["ldm"][1]
    best = recommended_guidance(guidance["rows"])
    assert best is guidance_row(guidance, DEFAULT_GUIDANCE_SCALE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_CONDITION_ANNEALING)
    assert min(best["accuracy"]) >= 0.995 and min(best["thickness_adherence"]) >= 0.95 and min(best["spread"]) >= 0.85
