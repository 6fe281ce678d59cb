"""Every bad input a learner can produce gets a sentence, not a traceback from deep inside PyTorch.

Hypothesis generates the inputs: any text for the tokenizer, any number for the pipelines'
arguments, any shape for an img2img image. (Missing and corrupted data files: test_data.py;
tampered checkpoints: test_pretrained.py; unknown words and empty prompts: test_ldm.py.)
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib import friendly
from course_lib.clip import CLIP
from course_lib.ldm import MAX_GUIDANCE_SCALE, LatentDiffusionPipeline
from course_lib.ddpm import DDPMPipeline
from course_lib.validate import MAX_SEED, check_float, check_int
from course_lib.tokenizer import SPECIAL_TOKENS, Tokenizer, UnknownWordError
from course_lib.unet import UNet
from course_lib.vae import ConvVAE

TOKENIZER = Tokenizer()
WORDS = [w for w in TOKENIZER.vocabulary if w not in SPECIAL_TOKENS]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ldm():
    torch.manual_seed(0)
    clip = CLIP(embed_dim=16, text_width=16, text_layers=1, text_heads=2, image_channels=8, image_width=16)
    unet = UNet(in_channels=4, out_channels=4, base_channels=8, channel_mults=(1, 2), attention_levels=(False, True),
                num_heads=2, context_dim=16, pad_to_multiple=True)
    return LatentDiffusionPipeline(unet, ConvVAE(latent_channels=4, channels=8), clip.text_encoder, clip.tokenizer)


@pytest.fixture(scope="module")
def ddpm():
    return DDPMPipeline(UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, False)))


# --- the tokenizer --------------------------------------------------------------------

@FAST
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=10))
def test_known_words_round_trip(words):
    ids = TOKENIZER(" ".join(words))
    assert ids.shape == (1, TOKENIZER.context_length) and ids.dtype == torch.long
    assert TOKENIZER.decode(ids[0]) == " ".join(words).replace(" ,", ",")


@FAST
@given(st.text(max_size=40))
def test_any_text_gives_ids_or_a_clear_error(text):
    try:
        ids = TOKENIZER(text)
    except UnknownWordError as err:
        assert "is not in the vocabulary" in str(err)
        assert any(repr(w) in str(err) for w in TOKENIZER.split(text) if w not in TOKENIZER.ids)
    except ValueError as err:                      # nothing to tokenize: empty or only spaces
        assert not TOKENIZER.split(text) and "no words" in str(err)
    else:
        assert ids.min() >= 0 and ids.max() < len(TOKENIZER)
        assert (ids == TOKENIZER.end_id).sum() == 1       # long texts are cut, but keep their <end>


@FAST
@given(st.one_of(st.none(), st.integers(), st.floats(), st.lists(st.integers(), max_size=2)))
def test_non_text_prompt_is_refused_by_name(value):
    with pytest.raises((TypeError, ValueError)) as refused:
        TOKENIZER(value if isinstance(value, list) else [value])
    message = str(refused.value)
    if value == []:
        assert message == "no texts given: pass a string or a non-empty list of strings"
    else:
        assert "must be a string" in message and "prompt" in message, message
        assert type(value[0] if isinstance(value, list) else value).__name__ in message, message


def test_a_prompt_that_is_no_list_is_refused_by_name():
    with pytest.raises(TypeError, match=r"texts must be a string or a list of strings, got int 7"):
        TOKENIZER(7)


# --- argument validation ----------------------------------------------------------------

@FAST
@given(st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)))
def test_check_int_accepts_exactly_the_integers_in_range(value):
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000
    try:
        check_int("num_inference_steps", value, 1, 1000)
        assert ok
    except ValueError as err:
        assert not ok and "num_inference_steps" in str(err) and "1 to 1000" in str(err)


@FAST
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100), st.booleans(), st.none()))
def test_check_float_accepts_exactly_the_numbers_in_range(value):
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
          and 0.0 <= value <= 1.0)
    try:
        check_float("strength", value, 0.0, 1.0)
        assert ok
    except ValueError as err:
        assert not ok and "strength" in str(err)


@FAST
@given(steps=st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
       guidance=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=MAX_GUIDANCE_SCALE + 1e-6), st.just(math.nan)),
       strength=st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001), st.just(math.inf)),
       seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)))
def test_ldm_refuses_every_out_of_range_argument_before_any_work(ldm, steps, guidance, strength, seed):
    image = torch.rand(1, 1, 28, 28)
    for kwargs, name in ((dict(num_inference_steps=steps), "num_inference_steps"),
                         (dict(guidance_scale=guidance), "guidance_scale"),
                         (dict(image=image, strength=strength), "strength"), (dict(seed=seed), "seed")):
        with pytest.raises(ValueError, match=name):
            ldm("a seven", **kwargs)


@FAST
@given(shape=st.lists(st.integers(1, 30), min_size=1, max_size=5).filter(lambda s: s[1:] != [1, 28, 28]))
def test_img2img_refuses_any_other_shape(ldm, shape):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        ldm("a seven", image=torch.rand(*shape), num_inference_steps=1)


@FAST
@given(low=st.floats(-10, 1), high=st.floats(0, 10))
def test_img2img_refuses_values_outside_0_1(ldm, low, high):
    image = torch.full((1, 1, 28, 28), 0.5)
    image[0, 0, 0, 0], image[0, 0, 0, 1] = low, high
    if 0 <= image.min() and image.max() <= 1:             # as float32 sees them (-1e-300 is -0.0 there)
        assert ldm("a seven", image=image, num_inference_steps=1).shape == (1, 1, 28, 28)
    else:
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            ldm("a seven", image=image, num_inference_steps=1)


@FAST
@given(batch=st.one_of(st.integers(max_value=0), st.integers(min_value=10_001)),
       seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1)))
def test_ddpm_refuses_bad_batch_and_seed(ddpm, batch, seed):
    with pytest.raises(ValueError, match="batch_size"):
        ddpm(batch_size=batch, num_inference_steps=1)
    with pytest.raises(ValueError, match="seed"):
        ddpm(batch_size=1, num_inference_steps=1, seed=seed)


# --- running a notebook out of order ---------------------------------------------------------

def test_a_cell_run_out_of_order_names_what_it_needs(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    assert friendly.install(shell)
    shell.run_cell("images = pipe('a thick seven')")          # as if the cell that loads `pipe` was skipped
    shown = capsys.readouterr()
    err = shown.out + shown.err                                 # IPython prints tracebacks to stdout
    assert "NameError" in err and "`pipe` comes from an earlier cell" in err and "Run All Above" in err
    shell.run_cell("1 / 0")                                     # other errors are left as they are
    shown = capsys.readouterr()
    assert "ZeroDivisionError" in shown.out + shown.err and "earlier cell" not in shown.out + shown.err
    assert friendly.out_of_order_hint(KeyError("x")) is None
