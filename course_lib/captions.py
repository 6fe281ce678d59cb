"""Captions with real language for MNIST: the digit plus attributes measured on the image itself.

A CLIP model needs text that says more than the class name, so every digit gets
captions such as "a thick slanted seven" or "the digit 7, written small". The
attributes are *measured* on the pixels, never guessed:

=========  ===============================================================  ====================
attribute  measure (image in [0, 1], ink = pixel values)                    words
=========  ===============================================================  ====================
thickness  stroke width in pixels: ink mass / half the outline length       "thin" / "thick"
           (a stroke of length L and width w has ink ~ L*w, outline ~ 2L)
slant      horizontal shear of the ink, from image moments:                 "upright" / "slanted"
           -mu11 / mu02 (> 0: the top leans right)
size       bounding-box area of the pixels above 0.5                        "small" / "large"
=========  ===============================================================  ====================

Thresholds are the terciles *within each digit class*, computed on the training pool
(``AttributeThresholds.fit``): "thick" means among the thickest third of its kind, so
every digit has thin and thick examples. The middle third gets no word.

One attribute-digit combination is never shown in training (``HELD_OUT_COMBINATION``:
"thin" with eight), so that the course can measure compositional generalisation:
does "a thin eight" still find thin eights?
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import check_digits

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = {"thickness": ("thin", "thick"), "slant": ("upright", "slanted"), "size": ("small", "large")}
HELD_OUT_COMBINATION = ("thin", 8)   # (word, digit) never captioned together in training


def stroke_thickness(images: torch.Tensor) -> torch.Tensor:
    """Stroke width in pixels, (B, 1, 28, 28) in [0, 1] -> (B,): ink mass / (outline length / 2)."""
    ink = images.flatten(1).sum(1)
    on = (images[:, 0] > 0.5).float()
    padded = torch.nn.functional.pad(on, (1, 1, 1, 1))
    outline = (padded[:, 1:, :] - padded[:, :-1, :]).abs().flatten(1).sum(1) \
        + (padded[:, :, 1:] - padded[:, :, :-1]).abs().flatten(1).sum(1)
    return ink / (outline / 2).clamp(min=1.0)


def slant(images: torch.Tensor) -> torch.Tensor:
    """Shear of the ink, (B, 1, 28, 28) -> (B,): -mu11 / mu02 from image moments; > 0 leans right."""
    b, _, h, w = images.shape
    ink = images[:, 0]
    mass = ink.flatten(1).sum(1).clamp(min=1e-6)
    ys = torch.arange(h, dtype=images.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=images.dtype).view(1, 1, w)
    y_mean = (ink * ys).flatten(1).sum(1) / mass
    x_mean = (ink * xs).flatten(1).sum(1) / mass
    dy, dx = ys - y_mean.view(b, 1, 1), xs - x_mean.view(b, 1, 1)
    mu11 = (ink * dx * dy).flatten(1).sum(1) / mass
    mu02 = (ink * dy * dy).flatten(1).sum(1) / mass
    return -mu11 / mu02.clamp(min=1e-6)    # image rows grow downwards, hence the minus


def box_size(images: torch.Tensor) -> torch.Tensor:
    """Area in pixels of the bounding box of the pixels above 0.5, (B, 1, 28, 28) -> (B,)."""
    on = images[:, 0] > 0.5
    rows, cols = on.any(2), on.any(1)
    idx = torch.arange(28)

    def extent(mask):
        first = torch.where(mask, idx, 28).min(1).values
        last = torch.where(mask, idx, -1).max(1).values
        return (last - first + 1).clamp(min=0)

    return (extent(rows) * extent(cols)).float()


MEASURES = {"thickness": stroke_thickness, "slant": slant, "size": box_size}


def measure_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """All three measures for a batch: {"thickness": (B,), "slant": (B,), "size": (B,)}."""
    check_digits(images)
    return {name: fn(images) for name, fn in MEASURES.items()}


@dataclass
class AttributeThresholds:
    """Per-class tercile thresholds: low[name][digit] and high[name][digit]; below low -> first word, above high -> second."""

    low: dict[str, list[float]]
    high: dict[str, list[float]]

    @classmethod
    def fit(cls, images: torch.Tensor, labels: torch.Tensor) -> "AttributeThresholds":
        """Compute the terciles of each measure within each digit class (use the training pool)."""
        missing = [d for d in range(10) if not (labels == d).any()]
        if missing:
            raise ValueError(f"thresholds are per digit class, but there are no examples of {missing}; "
                             "fit them on the training pool")
        values = measure_attributes(images)
        low, high = {}, {}
        for name, v in values.items():
            low[name] = [torch.quantile(v[labels == d], 1 / 3).item() for d in range(10)]
            high[name] = [torch.quantile(v[labels == d], 2 / 3).item() for d in range(10)]
        return cls(low, high)

    def sides(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, 3) int64, one column per attribute in ``ATTRIBUTES`` order: -1 below the low threshold of the
        image's own digit (first word: thin, upright, small), +1 above the high one (thick, slanted, large), 0 between."""
        values = measure_attributes(images)
        columns = []
        for name in ATTRIBUTES:
            low = torch.tensor(self.low[name], dtype=values[name].dtype)[labels]
            high = torch.tensor(self.high[name], dtype=values[name].dtype)[labels]
            columns.append((values[name] > high).long() - (values[name] < low).long())
        return torch.stack(columns, dim=1)

    def words(self, images: torch.Tensor, labels: torch.Tensor) -> list[dict[str, str | None]]:
        """For each image, {attribute: word or None}, e.g. {"thickness": "thick", "slant": None, "size": "small"}."""
        return [{name: (None if s == 0 else ATTRIBUTES[name][(s + 1) // 2]) for name, s in zip(ATTRIBUTES, row)}
                for row in self.sides(images, labels).tolist()]

    def side(self, name: str, images: torch.Tensor, digit: int) -> torch.Tensor:
        """-1 (below the low threshold), 0 (middle), +1 (above the high one) for each image, as digit ``digit``."""
        labels = torch.full((len(images),), digit, dtype=torch.long)
        return self.sides(images, labels)[:, list(ATTRIBUTES).index(name)]


def attribute_codes(thresholds: AttributeThresholds, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64: for thickness, slant, size, 0 = no word, 1 = first word (thin...), 2 = second (thick...)."""
    sides = thresholds.sides(images, labels)
    return torch.where(sides < 0, 1, torch.where(sides > 0, 2, 0))


def words_from_codes(codes) -> dict[str, str | None]:
    """One digit's codes (3,) -> {attribute: word or None}, the form ``caption`` takes."""
    return {name: (None if c == 0 else ATTRIBUTES[name][c - 1]) for name, c in zip(ATTRIBUTES, codes.tolist())}


def attribute_matches(thresholds: AttributeThresholds, images: torch.Tensor, labels: torch.Tensor,
                      digit: int, word: str) -> torch.Tensor:
    """(B,) bool: the image is a ``digit`` *and* measures as ``word`` ("thick", "slanted", ...) for that digit.

    This is the ground truth a caption like "a thick seven" is checked against.
    """
    for name, pair in ATTRIBUTES.items():
        if word in pair:
            side = thresholds.side(name, images, digit)
            return (labels == digit) & (side == (1 if word == pair[1] else -1))
    known = ", ".join(w for pair in ATTRIBUTES.values() for w in pair)
    raise ValueError(f"{word!r} is not an attribute word; known: {known}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiu" else "a"    # "an eight", "an upright", but "a one"


def caption(digit: int, words: dict[str, str | None], generator: torch.Generator | None = None,
            training: bool = True) -> str:
    """One caption for a digit with measured attribute words, from a random template.

    With ``training=True`` the held-out combination (``HELD_OUT_COMBINATION``) is dropped.
    """
    g = generator

    def pick(n):
        return int(torch.randint(n, (1,), generator=g))

    attrs = [w for w in (words.get("thickness"), words.get("slant")) if w]
    size = words.get("size")
    if training and digit == HELD_OUT_COMBINATION[1]:
        attrs = [w for w in attrs if w != HELD_OUT_COMBINATION[0]]
    attrs = [w for w in attrs if pick(4) > 0]          # mention each attribute 3 times out of 4
    if size and pick(2):
        attrs.append(size)
    if len(attrs) > 1 and pick(2):
        attrs[0], attrs[1] = attrs[1], attrs[0]
    name = DIGIT_WORDS[digit]
    templates = [
        lambda: _with_article(*attrs, name),
        lambda: _with_article(*attrs, "handwritten", name),
        lambda: f"the digit {digit}" + (f", written {' and '.join(attrs)}" if attrs else ""),
        lambda: "a picture of " + _with_article(*attrs, name),
        lambda: _with_article(*attrs, name, "digit"),
    ]
    return templates[pick(len(templates))]()


def _with_article(*words: str) -> str:
    return f"{_article(words[0])} {' '.join(words)}"


def class_prompt(digit: int) -> str:
    """The one prompt per class used for zero-shot classification: "a handwritten seven"."""
    return f"a handwritten {DIGIT_WORDS[digit]}"


def attribute_prompt(word: str, digit: int) -> str:
    """The prompt for attribute retrieval: "a thick seven", "an upright one"."""
    return _with_article(word, DIGIT_WORDS[digit])


def ldm_caption(digit: int, codes: torch.Tensor, generator: torch.Generator) -> str:
    """A fresh caption from a digit's attribute codes (3,) for latent diffusion's training.

    Unlike CLIP's training, latent diffusion sees every attribute-digit pair (the held-out "thin eight"
    was chapter 04's experiment), so every prompt a learner can type is taught.
    """
    return caption(digit, words_from_codes(codes), generator, training=False)
