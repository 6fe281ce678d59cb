"""course_lib.step_search: the searched Euler levels follow a curved flow better than even ones.

The test flow is exact: data N(mu, c^2) per pixel, so the velocity field and the ODE's solution are known in
closed form (x_sigma = (1 - sigma) mu + sqrt((1 - sigma)^2 c^2 + sigma^2) noise). With a small c the road bends
sharply near sigma = c, where evenly spaced Euler steps overshoot; the search must find that out by itself.
"""

import pytest
import torch
import torch.nn as nn

from course_lib.flow import FlowMatchingPipeline
from course_lib.step_search import search_sigmas

MU, C = 0.5, 0.05
SHAPE = (1, 4, 4)


class GaussianVelocity(nn.Module):
    """The exact flow-matching velocity E[noise - x0 | x_sigma = x] for data N(MU, C^2): forward(x, 1000 sigma)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))        # the pipeline finds the device from a parameter

    def forward(self, x, timestep):
        sigma = (timestep / 1000).reshape(-1, 1, 1, 1).to(x)
        variance = (1 - sigma) ** 2 * C**2 + sigma**2
        centred = x - (1 - sigma) * MU
        return (sigma - (1 - sigma) * C**2) / variance * centred - MU


def exact(noise, sigma):
    return (1 - sigma) * MU + ((1 - sigma) ** 2 * C**2 + sigma**2) ** 0.5 * noise


@pytest.fixture(scope="module")
def searched():
    pipe = FlowMatchingPipeline(GaussianVelocity().double(), sample_shape=SHAPE)
    noise = torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return pipe, noise, search_sigmas(pipe, noise, max_steps=4, num_grid=64, progress=False)


def test_the_teacher_is_the_exact_solution(searched):
    pipe, noise, _ = searched
    levels = pipe.solve(noise, sampler="heun", sigmas=torch.linspace(1, 0, 65, dtype=torch.float64), progress=False,
                        return_levels=True)
    assert len(levels) == 65 and torch.equal(levels[0], noise)
    for index, tolerance in ((16, 1e-3), (48, 1e-3), (64, 1e-2)):     # the last step, into the bend, is Euler
        assert torch.allclose(levels[index], exact(noise, 1 - index / 64), atol=tolerance)


def test_searched_levels_are_a_schedule_on_the_grid(searched):
    _, _, sigmas = searched
    assert sorted(sigmas) == [1, 2, 3, 4]
    assert sigmas[1] == [1.0, 0.0]
    for n, levels in sigmas.items():
        assert len(levels) == n + 1 and levels[0] == 1.0 and levels[-1] == 0.0
        assert all(a > b for a, b in zip(levels, levels[1:]))
        assert all(abs(s * 64 - round(s * 64)) < 1e-9 for s in levels)


def test_searched_levels_land_closer_to_the_exact_end_than_even_ones(searched):
    pipe, noise, sigmas = searched
    target = exact(noise, 0.0)
    for n in (2, 3, 4):
        even = pipe.solve(noise, n, progress=False)
        found = pipe.solve(noise, sigmas=sigmas[n], progress=False)
        even_error, found_error = (even - target).pow(2).mean(), (found - target).pow(2).mean()
        assert found_error < 0.5 * even_error, (n, sigmas[n], found_error, even_error)
    # the road bends near sigma = C: the search spends a level there, even spacing does not
    assert min(sigmas[4][1:-1]) < 0.2


def test_more_steps_land_closer(searched):
    pipe, noise, sigmas = searched
    target = exact(noise, 0.0)
    errors = [(pipe.solve(noise, sigmas=sigmas[n], progress=False) - target).pow(2).mean() for n in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_arguments_are_checked(searched):
    pipe, noise, _ = searched
    with pytest.raises(ValueError, match="max_steps"):
        search_sigmas(pipe, noise, max_steps=10, num_grid=8, progress=False)
    with pytest.raises(ValueError, match="num_grid"):
        search_sigmas(pipe, noise, num_grid=1, progress=False)
