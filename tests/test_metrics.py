"""course_lib.metrics: the Fréchet distance formula, and the classifier's plumbing."""

import numpy as np
import pytest
import torch
from scipy import linalg

from course_lib.data import load_mnist
from course_lib.metrics import (MNISTClassifier, augment, class_histogram, frechet_distance, load_classifier,
                                precision_recall, quality_report, real_digits)


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


def test_precision_recall_separate_fidelity_from_variety():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    same = torch.randn(400, 8, generator=g)
    collapsed = real[:1] + 0.01 * torch.randn(400, 8, generator=g)          # faithful, but no variety
    off = torch.randn(400, 8, generator=g) + 6                               # varied, but nothing like real
    p_same, r_same = precision_recall(real, same)
    p_col, r_col = precision_recall(real, collapsed)
    p_off, r_off = precision_recall(real, off)
    assert p_same > 0.8 and r_same > 0.8
    assert p_col > 0.95 and r_col < 0.2
    assert p_off < 0.05 and r_off < 0.05


def test_quality_report_measures_real_digits_at_the_floor_and_static_far_from_it():
    classifier = load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images

    def static(seed, n):
        return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))

    real = quality_report(classifier, real_digits(heldout, pool, 1000), heldout, pool, seeds=(0, 1))
    noise = quality_report(classifier, static, heldout, pool, num_samples=300, seeds=(0, 1))
    assert real["num_samples"] == 1000 and real["seeds"] == [0, 1] and len(real["ratio"]) == 2
    # real digits sit near the floor, up to the sampling noise of 1,000 digits (0.88-1.47 over six seeds)
    assert all(0.7 < r < 1.6 for r in real["ratio"]), real["ratio"]
    assert all(r > 10 for r in noise["ratio"]), noise["ratio"]
    assert min(real["precision"]) > 0.6 and min(real["recall"]) > 0.6     # k-NN manifolds of 1,000 points in 128-D
    assert max(noise["precision"]) < 0.1
    assert all(0.05 < s for s in real["min_class_share"]) and real["floor"][0] != real["floor"][1]


def test_real_digits_are_pool_digits_the_floor_did_not_draw():
    from course_lib.metrics import _draws
    heldout, pool = torch.rand(50, 1, 28, 28), torch.rand(40, 1, 28, 28)
    index = lambda images: {i for i in range(len(pool)) for d in images if torch.equal(pool[i], d)}
    for seed in (0, 1):
        _, order = _draws(seed, len(heldout), len(pool))
        taken = {int(i) for i in order[:10]}                       # the floor's digits
        for draw in (1, 2, 3):
            picked = index(real_digits(heldout, pool, num_samples=10, draw=draw)(seed, 10))
            assert len(picked) == 10 and not picked & taken        # no digit shared with the floor or another draw
            taken |= picked
    assert not torch.equal(real_digits(heldout, pool, 10)(0, 10), real_digits(heldout, pool, 10)(1, 10))
    with pytest.raises(ValueError, match="too few"):
        real_digits(heldout, pool, num_samples=10, draw=3)(0, 11)
    with pytest.raises(ValueError, match="draw 0 is the floor"):
        real_digits(heldout, pool, num_samples=10, draw=0)


def test_real_draw_distances_are_the_floor_then_each_real_draw_measured_as_quality_report_does():
    from course_lib.metrics import real_draw_distances
    classifier = load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images[:1300]
    distances = real_draw_distances(classifier, heldout, pool, num_samples=300, seeds=(0, 1))
    report = quality_report(classifier, real_digits(heldout, pool, 300, draw=2), heldout, pool, 300, seeds=(0, 1))
    assert [len(d) for d in distances] == [4, 4]                 # 1,300 digits hold four disjoint draws of 300
    assert [d[0] for d in distances] == report["floor"] and [d[2] for d in distances] == report["fd"]
    assert len(set(distances[0])) == 4                           # different digits, different distances


def test_within_class_spread_sees_collapse_and_ignores_class_means():
    from course_lib.metrics import within_class_spread
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(200)
    centres = torch.randn(10, 8, generator=g) * 5
    real = centres[labels] + torch.randn(2000, 8, generator=g)
    same = centres[labels] + torch.randn(2000, 8, generator=g)
    narrow = centres[labels] + 0.5 * torch.randn(2000, 8, generator=g)
    assert within_class_spread(same, labels, real, labels) == pytest.approx(1.0, abs=0.1)
    assert within_class_spread(narrow, labels, real, labels) == pytest.approx(0.25, abs=0.03)
    # shifting every class elsewhere changes nothing: spread is about variety within a class
    assert within_class_spread(same + 3.0, labels, real, labels) == pytest.approx(
        within_class_spread(same, labels, real, labels))
    with pytest.raises(ValueError, match="no class"):
        within_class_spread(same[:1], labels[:1], real, labels)
