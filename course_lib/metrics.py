"""Honest numbers for generated digits: a small MNIST classifier, classifier-FID, class coverage.

* ``MNISTClassifier`` is trained on the training pool only (``python scripts/train.py classifier``) and
  shipped; its held-out accuracy is the first thing its tests check.
* **Classifier-FID** is the Fréchet distance between two sets of images in the classifier's
  128-dimensional feature space (the idea of FID, with an MNIST network in place of
  Inception). Lower is better; its **floor** is real-vs-real: the FID between as many
  training-pool digits and the held-out digits. Always compare FIDs of equal sample sizes:
  small samples inflate it.
* ``class_histogram``: the fraction of samples the classifier puts in each class, to see
  whether a model covers all ten digits (mode coverage).
* ``precision_recall`` (Kynkäänniemi et al. 2019) splits what FID mixes: precision is the share of
  generated digits that fall inside the real digits' feature manifold (fidelity), recall the share
  of real digits inside the generated ones' (variety).
* ``quality_report`` is the course's measuring protocol: 1,000 generated digits per figure against
  1,000 held-out ones, the floor measured at the same size against the same reference, two seeds
  reported as a range, class coverage and precision/recall beside the Fréchet distance.
  ``real_digits`` measures real handwriting the same way: the scores a perfect model could expect;
  ``real_draw_distances`` how far the draw of 1,000 digits alone moves the Fréchet distance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .pretrained import load_model
from .validate import RANGE_TOLERANCE, batched, check_digits

FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """A small CNN: (B, 1, 28, 28) in [0, 1] -> logits (B, 10); ``features`` gives (B, 128)."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, dropout: float = 0.3):
        super().__init__()
        self.config = dict(width=width, feature_dim=feature_dim, dropout=dropout)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),           # 14 x 14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),  # 7 x 7
            nn.Flatten(), nn.Linear(2 * w * 49, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        check_digits(images, tolerance=RANGE_TOLERANCE)    # augmented digits round a little past 1
        return self.body((images - 0.1307) / 0.3081)   # MNIST's mean and std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def augment(images: torch.Tensor, generator: torch.Generator, max_degrees: float = 12.0,
            max_shift: float = 0.1, scale_range=(0.9, 1.1)) -> torch.Tensor:
    """Random small rotations, shifts and zooms, (B, 1, 28, 28) -> same: digits written a bit differently."""
    b = images.shape[0]
    angle = (torch.rand(b, generator=generator) * 2 - 1) * max_degrees * torch.pi / 180
    scale = scale_range[0] + torch.rand(b, generator=generator) * (scale_range[1] - scale_range[0])
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * max_shift * 2   # grid units: 2 = full width
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def classifier_loss(model, batch, generator):
    """Cross-entropy on augmented digits: the loss_fn that ``course_lib.train.train`` needs."""
    images, labels = batch
    return F.cross_entropy(model(augment(images, generator)), labels, label_smoothing=0.05)


def load_classifier() -> MNISTClassifier:
    """The shipped classifier, checksum-verified."""
    return load_model("classifier", MNISTClassifier)[0]


@torch.no_grad()
def predict(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels (N,) for images (N, 1, 28, 28) in [0, 1]."""
    classifier.eval()
    return batched(lambda x: classifier(x).argmax(1), images, batch_size)


@torch.no_grad()
def classifier_features(classifier: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features (N, 128), float64, of images (N, 1, 28, 28) in [0, 1]."""
    classifier.eval()                       # features() checks the images
    return batched(classifier.features, images, batch_size).double()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) between two (N, D) feature sets.

    The distance between the two Gaussians fitted to the features (FID's formula). The matrix
    square roots use symmetric eigendecompositions, which stay real and stable.
    """
    a, b = features_a.double(), features_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature sets with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < 2:
        raise ValueError("need at least two samples per set to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    sqrt_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(sqrt_a @ cov_b @ sqrt_a)
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def classifier_fid(classifier: MNISTClassifier, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """Classifier-FID between two image sets (N, 1, 28, 28) in [0, 1]."""
    return frechet_distance(classifier_features(classifier, images_a), classifier_features(classifier, images_b))


def class_histogram(classifier: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Fraction of ``images`` the classifier assigns to each digit, shape (10,), sums to 1."""
    counts = torch.bincount(predict(classifier, images), minlength=10).double()
    return (counts / counts.sum()).numpy()


def real_vs_real_floor(classifier: nn.Module, pool_images: torch.Tensor, heldout_features: torch.Tensor,
                       num_samples: int, seed: int = 0) -> float:
    """Classifier-FID of ``num_samples`` real digits (drawn from ``pool_images`` with ``seed``) to the held-out
    features: the best score a generator can expect with that many samples, since FID is biased by sample size."""
    pick = torch.randperm(len(pool_images), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return frechet_distance(classifier_features(classifier, pool_images[pick]), heldout_features)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of (N, D) and (M, D) feature sets.

    Each set's manifold is the union of balls around its points, each reaching the point's k-th
    nearest neighbour in the same set. Precision: the share of fake points inside the real manifold;
    recall: the share of real points inside the fake one. Both in [0, 1], higher is better.
    """
    def radii(features):
        distances = torch.cdist(features, features)
        return distances.kthvalue(k + 1, dim=1).values          # k + 1: each point is its own nearest
    real, fake = real_features.double(), fake_features.double()
    between = torch.cdist(fake, real)                            # (M, N)
    precision = (between <= radii(real)[None, :]).any(1).double().mean().item()
    recall = (between.T <= radii(fake)[None, :]).any(1).double().mean().item()
    return precision, recall


def within_class_spread(fake_features: torch.Tensor, fake_labels: torch.Tensor, real_features: torch.Tensor,
                        real_labels: torch.Tensor) -> float:
    """How varied the samples of each class are, relative to real digits of that class: 1.0 = as varied.

    For each class, the total variance (trace of the covariance) of its fake features (M, D) over that of its
    real features (N, D); the mean over the classes both sets contain (at least two of each). Labels: (M,), (N,)
    ints, e.g. the prompted digit for generated samples. Below 1, guidance or a collapsed model draws every
    "seven" alike.
    """
    ratios = []
    for c in torch.unique(real_labels).tolist():
        fake, real = fake_features[fake_labels == c].double(), real_features[real_labels == c].double()
        if len(fake) >= 2 and len(real) >= 2:
            ratios.append(fake.var(0).sum() / real.var(0).sum())
    if not ratios:
        raise ValueError("no class has at least two fake and two real samples")
    return float(torch.stack(ratios).mean())


def _draws(seed: int, num_heldout: int, num_pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The orders in which seed ``seed`` draws the held-out digits (the reference: the first ``num_samples``) and
    the training pool (the floor: its first ``num_samples``)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_heldout, generator=g), torch.randperm(num_pool, generator=g)


def real_digits(heldout_images: torch.Tensor, pool_images: torch.Tensor, num_samples: int = 1000, draw: int = 1):
    """A ``generate(seed, n)`` for ``quality_report`` that returns real digits: n training-pool digits that the
    floor of that seed did not draw (draw k takes the digits from k * num_samples on, in the order the floor took
    its first num_samples from; different draws share no digit). Measured like a model, they show what each figure
    reads for real handwriting at this sample size: Fréchet distance / floor near 1, precision and recall below 1
    (each set's k-NN manifold misses some of the other's points), class shares off 10% by sampling alone.
    Needs a pool of at least ``draw * num_samples + n`` digits."""
    if draw < 1:
        raise ValueError(f"draw must be 1 or more (draw 0 is the floor's own digits), got {draw}")

    def generate(seed: int, n: int) -> torch.Tensor:
        start = draw * num_samples
        if start + n > len(pool_images):
            raise ValueError(f"the training pool has {len(pool_images):,} digits: too few for draw {draw} of "
                             f"{num_samples:,} (digits {start:,} to {start + n:,}); use a smaller draw or num_samples")
        _, pool_order = _draws(seed, len(heldout_images), len(pool_images))
        return pool_images[pool_order[start:start + n]]
    return generate


def real_draw_distances(classifier: MNISTClassifier, heldout_images: torch.Tensor, pool_images: torch.Tensor,
                        num_samples: int = 1000, seeds=(0, 1)) -> list[list[float]]:
    """Per seed, the Fréchet distance to that seed's reference of every disjoint draw of ``num_samples`` training-pool
    digits the pool holds, in the order ``real_digits`` numbers them: draw 0 is the floor's, draw 1 the first that
    ``real_digits`` hands out. How far these lie apart is how far the draw alone moves a figure."""
    distances = []
    for seed in seeds:
        heldout_order, pool_order = _draws(seed, len(heldout_images), len(pool_images))
        reference = classifier_features(classifier, heldout_images[heldout_order[:num_samples]])
        distances.append([frechet_distance(classifier_features(
            classifier, pool_images[pool_order[start:start + num_samples]]), reference)
            for start in range(0, len(pool_images) - num_samples + 1, num_samples)])
    return distances


def quality_report(classifier: MNISTClassifier, generate, heldout_images: torch.Tensor, pool_images: torch.Tensor,
                   num_samples: int = 1000, seeds=(0, 1)) -> dict:
    """The course's protocol for one way of generating digits.

    generate(seed, n) -> n digits (n, 1, 28, 28) in [0, 1]. For each seed: ``num_samples`` generated
    digits against ``num_samples`` held-out digits drawn with that seed (the reference), and the floor:
    as many training-pool digits against the same reference. Returns per-seed lists under "fd", "floor",
    "ratio" (fd / floor), "precision", "recall", "min_class_share", "max_class_share", plus "num_samples"
    and "seeds". Report a figure as the range over seeds, never one seed.
    """
    keys = ("fd", "floor", "ratio", "precision", "recall", "min_class_share", "max_class_share")
    report = {key: [] for key in keys} | {"num_samples": num_samples, "seeds": list(seeds)}
    for seed in seeds:
        heldout_order, pool_order = _draws(seed, len(heldout_images), len(pool_images))
        reference = classifier_features(classifier, heldout_images[heldout_order[:num_samples]])
        real = classifier_features(classifier, pool_images[pool_order[:num_samples]])
        samples = generate(seed, num_samples)
        fake = classifier_features(classifier, samples)
        fd, floor = frechet_distance(fake, reference), frechet_distance(real, reference)
        precision, recall = precision_recall(reference, fake)
        shares = class_histogram(classifier, samples)
        for key, value in zip(keys, (fd, floor, fd / floor, precision, recall, float(shares.min()),
                                     float(shares.max()))):
            report[key].append(value)
    return report
