"""course_lib.metrics: the Fréchet distance formula, and the classifier's plumbing."""

import numpy as np
import pytest
import torch
from scipy import linalg

from course_lib.metrics import MNISTClassifier, augment, class_histogram, frechet_distance


def scipy_frechet(a, b):
    """The textbook FID computation (as in pytorch-fid), as an independent reference."""
    a, b = a.numpy(), b.numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_frechet_distance_matches_reference_and_theory():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5000, 8, generator=g, dtype=torch.float64)
    b = torch.randn(5000, 8, generator=g, dtype=torch.float64) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    # theory for N(0, I) vs N(1, 4I) in 8 dims: 8 * 1^2 + 8 * (1 - 2)^2 = 16
    assert frechet_distance(a, b) == pytest.approx(16, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :4])


def test_classifier_shapes_and_histogram():
    torch.manual_seed(0)
    clf = MNISTClassifier().eval()
    x = torch.rand(6, 1, 28, 28)
    assert clf(x).shape == (6, 10) and clf.features(x).shape == (6, 128)
    hist = class_histogram(clf, x)
    assert hist.shape == (10,) and hist.sum() == pytest.approx(1)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        clf(torch.rand(6, 28, 28))


def test_augment_keeps_digits_recognisable():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    y = augment(x, g)
    assert y.shape == x.shape
    assert not torch.equal(x, y)                                   # it moves things
    assert (y.sum((1, 2, 3)) / x.sum((1, 2, 3))).sub(1).abs().max() < 0.3  # but keeps the ink


def test_bench_results_are_found_from_anywhere_and_missing_ones_explained(tmp_path, monkeypatch):
    from course_tools.bench import results as bench_results

    monkeypatch.chdir(tmp_path)                 # a student folder, the HTML build folder...
    assert bench_results("ldm")["prompt_accuracy"]["samples"] == 1000
    with pytest.raises(FileNotFoundError, match="bench/nothing_bench.py"):
        bench_results("nothing")
