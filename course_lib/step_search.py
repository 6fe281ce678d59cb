"""Where to put a few steps: the noise levels that keep a short Euler solve closest to a long one.

An Euler solve with n steps visits n + 1 noise levels sigma, from 1 to 0. Evenly spaced is one choice, SD3's
shift another; both are guesses. ``search_sigmas`` *measures* instead (a variant of Optimal Stepsize for
Diffusion Sampling, Pei et al. 2025, who search each noise on its own and take the median; here one set of
levels serves the whole batch): it solves the model's own ODE finely from a batch of fresh noise (the
teacher), then looks, by dynamic programming over that fine grid of levels, for the n-step Euler path whose
end lands closest to the teacher's end.

    levels[k][j]: the best state an Euler solve can reach at grid level j in exactly k steps
                  (best = closest, in mean squared error over the batch, to the teacher at level j)
    step k + 1:   from every reachable level i, one Euler step to every lower level j; keep, for each j,
                  the i whose landing point is closest to the teacher at j

For 1 and 2 steps this finds the best path on the grid. From 3 steps on it is an approximation: the state
closest to the teacher halfway is not always the one that leads closest at the end.

It needs only the model and noise: no data, no classifier, so the levels it picks are not tuned to any
quality metric. Cost: one network call per grid level per step count, on the whole batch.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .flow import NUM_TRAIN_TIMESTEPS, FlowMatchingPipeline
from .validate import check_int


@torch.no_grad()
def search_sigmas(pipe: FlowMatchingPipeline, noise: torch.Tensor, max_steps: int = 16, num_grid: int = 100,
                  progress: bool = True) -> dict[int, list[float]]:
    """The Euler noise levels for every step count 1..``max_steps`` that follow the model's own ODE best.

    pipe: a ``FlowMatchingPipeline`` (its ``unet(x_sigma, 1000 sigma)`` predicts the velocity; a diffusion
    network wrapped in ``flow.DiffusionAsFlow`` works too); noise: (B, C, H, W) starting points, N(0, I).
    The teacher is Heun on ``num_grid`` even steps; the levels are chosen among that grid's num_grid + 1 points.
    Returns {n: [1.0, ..., 0.0]} (n + 1 falling levels each), ready for ``pipe(..., sigmas=levels)``.
    Cost: about max_steps x num_grid network calls on the batch, plus the teacher's 2 num_grid - 1.
    """
    check_int("num_grid", num_grid, 2, 1000)
    check_int("max_steps", max_steps, 1, num_grid)
    grid = torch.linspace(1.0, 0.0, num_grid + 1, dtype=torch.float64)
    device = next(pipe.unet.parameters()).device
    # (num_grid + 1, B, C, H, W) on the network's device, level 0 = the noise
    teacher = torch.stack(pipe.solve(noise, sampler="heun", sigmas=grid, progress=False, return_levels=True))

    def velocity(x, level):
        return pipe.unet(x, torch.full((x.shape[0],), grid[level].item() * NUM_TRAIN_TIMESTEPS, device=device))

    # states[j]: the best state at grid level j after k steps (k = 0: only the noise, at level 0)
    states = {0: teacher[0]}
    came_from = []                                                  # came_from[k-1][j] = level before j
    sigmas = {}
    for k in tqdm(range(1, max_steps + 1), desc="searching steps", disable=not progress, leave=False):
        best_error = torch.full((num_grid + 1,), float("inf"), dtype=torch.float64)
        best_state, best_from = {}, {}
        for i, x in states.items():
            if i == num_grid:                                      # already at the clean end: no step left to take
                continue
            v = velocity(x, i)
            for j in range(i + 1, num_grid + 1):
                landed = x + (grid[j] - grid[i]).item() * v
                error = (landed - teacher[j]).pow(2).mean().item()
                if error < best_error[j]:
                    best_error[j], best_state[j], best_from[j] = error, landed, i
        states = best_state
        came_from.append(best_from)
        path = [num_grid]
        for back in reversed(came_from):
            path.append(back[path[-1]])
        sigmas[k] = [grid[j].item() for j in reversed(path)]
    return sigmas
