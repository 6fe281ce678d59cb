"""course_lib.captions and course_lib.tokenizer: measured attributes, grammatical captions, clear errors."""

import pytest
import torch

from course_lib.captions import (HELD_OUT_COMBINATION, AttributeThresholds, box_size, caption, class_prompt,
                                 measure_attributes, slant, stroke_thickness)
from course_lib.tokenizer import Tokenizer, UnknownWordError


def bar(width: int, shear: float = 0.0, height: int = 16) -> torch.Tensor:
    """A vertical stroke `width` pixels wide, its top shifted right by shear * height: (1, 1, 28, 28)."""
    img = torch.zeros(1, 1, 28, 28)
    for r in range(6, 6 + height):
        offset = round(shear * (6 + height - r))
        img[0, 0, r, 12 + offset:12 + offset + width] = 1.0
    return img


def test_stroke_thickness_measures_width_in_pixels():
    widths = stroke_thickness(torch.cat([bar(2), bar(4)]))
    assert widths[0] == pytest.approx(2, rel=0.15) and widths[1] == pytest.approx(4, rel=0.25)


def test_slant_sign_follows_the_lean():
    s = slant(torch.cat([bar(2, shear=0.5), bar(2), bar(2, shear=-0.5)]))
    assert s[0] > 0.3 and abs(s[1]) < 0.01 and s[2] < -0.3


def test_box_size_is_the_bounding_box_area():
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 5:15, 10:15] = 1.0
    assert box_size(img).item() == 50
    assert box_size(torch.zeros(1, 1, 28, 28)).item() == 0


def test_thresholds_are_per_class_terciles_and_words_follow_them():
    g = torch.Generator().manual_seed(0)
    images = torch.cat([bar(w) for w in (1, 2, 3, 4, 5, 6)] * 10)
    labels = torch.arange(10).repeat_interleave(6)
    th = AttributeThresholds.fit(images, labels)
    with pytest.raises(ValueError, match=r"no examples of \[9\]"):
        AttributeThresholds.fit(images[:54], labels[:54])
    words = th.words(images[:6], labels[:6])
    assert [w["thickness"] for w in words] == ["thin", "thin", None, None, "thick", "thick"]
    assert th.side("thickness", images[:6], 0).tolist() == [-1, -1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        measure_attributes(torch.zeros(28, 28))
    assert caption(0, words[0], g)                       # every combination yields some caption


def test_captions_are_grammatical_and_hide_the_held_out_combination():
    g = torch.Generator().manual_seed(1)
    word, digit = HELD_OUT_COMBINATION
    thin = {"thickness": word, "slant": "upright", "size": None}
    training = [caption(digit, thin, g) for _ in range(300)]
    assert not any(word in c.split() for c in training)
    assert any(word in c.split() for c in (caption(digit, thin, g, training=False) for _ in range(300)))
    every = [caption(d, {"thickness": "thick", "slant": "upright", "size": "small"}, g) for d in range(10) for _ in range(30)]
    assert not any(" a eight" in f" {c}" or " a upright" in f" {c}" or " an one" in f" {c}" for c in every)
    assert any("an eight" in c for c in every) and any("a one" in c or "a thick one" in c for c in every)
    assert class_prompt(7) == "a handwritten seven"


def test_tokenizer_round_trip_padding_and_truncation():
    tok = Tokenizer()
    ids = tok(["a thick seven", "the digit 7, written small"])
    assert ids.shape == (2, tok.context_length) and ids.dtype == torch.long
    assert [tok.decode(r) for r in ids] == ["a thick seven", "the digit 7, written small"]
    assert ids[0, 0] == tok.start_id and ids[0, 4] == tok.end_id and (ids[0, 5:] == tok.pad_id).all()
    assert tok.end_positions(ids).tolist() == [4, 7]
    long = tok(" ".join(["a"] * 30))
    assert long.shape == (1, tok.context_length) and long[0, -1] == tok.end_id     # truncated, <end> kept
    assert tok.vocabulary[:3] == ["<pad>", "<start>", "<end>"]                    # ids are part of the checkpoint
    assert torch.equal(tok("A THICK Seven"), tok("a thick seven"))


def test_tokenizer_explains_unknown_words_and_empty_prompts():
    tok = Tokenizer()
    with pytest.raises(UnknownWordError, match=r"'thik'.*Did you mean 'thick'"):
        tok("a thik seven")
    with pytest.raises(UnknownWordError, match="'zebra'"):
        tok(["a seven", "a zebra"])
    with pytest.raises(ValueError, match="no words"):
        tok("   ")
    with pytest.raises(ValueError, match="no texts"):
        tok([])
    with pytest.raises(TypeError):
        tok([7])


def test_empty_text_ids_have_the_context_length_for_any_count():
    """A training batch may drop none of its captions to the empty text: empty(0) must still be (0, L)."""
    tok = Tokenizer()
    for n in (0, 1, 3):
        ids = tok.empty(n)
        assert ids.shape == (n, tok.context_length)
    assert tok.decode(tok.empty(1)[0]) == ""
