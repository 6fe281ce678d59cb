"""Figures and sliders shared by the notebooks.

Every slider has a static companion (``noise_strip`` for ``timestep_slider``)
so the lesson also reads where widgets cannot run: GitHub, the HTML export.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import denormalize
from .schedule import NoiseSchedule


def show_images(images: torch.Tensor, nrow: int = 8, titles=None, title: str | None = None,
                scale: float = 1.2, row_labels=None):
    """Show a batch of images in a grid, ``nrow`` images to a row.

    images: (B, 1, H, W) in [0, 1]; values outside are clipped. titles: one string per image
    (None or "" for no title). row_labels: one string per row, written to the left of it.
    Returns the matplotlib Figure.
    """
    images = _as_batch(images)
    n = len(images)
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    fig, axes = plt.subplots(rows, ncol, figsize=(scale * ncol, scale * rows + (0.3 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i, 0].clamp(0, 1).cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if titles is not None and i < len(titles) and titles[i] not in (None, ""):
                ax.set_title(str(titles[i]), fontsize=8)
    for row, label in enumerate(row_labels or []):
        axes[row, 0].text(-0.15, 0.5, label, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images).detach().float()
    if images.ndim == 2:
        images = images[None, None]
    elif images.ndim == 3:
        images = images[:, None] if images.shape[0] != 1 else images[None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (B, 1, H, W), (B, H, W) or (H, W), got {tuple(images.shape)}")
    return images


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)


def draw_noised(ax_img, ax_hist, x0: torch.Tensor, t: int, schedule: NoiseSchedule,
                noise: torch.Tensor) -> None:
    """Draw x_t for one digit (image + pixel histogram against N(0, 1)) on two axes.

    x0, noise: (1, 1, 28, 28); x0 in [-1, 1]. The histogram is what turns into
    TV static: by t = T-1 it sits on the standard normal curve.
    """
    xt = schedule.q_sample(x0, t, noise)
    ab = schedule.alphas_cumprod[t].item()
    ax_img.imshow(denormalize(xt)[0, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_img.set_title(f"t = {t}\nᾱ = {ab:.3f}", fontsize=9)
    ax_img.axis("off")
    grid = np.linspace(-4, 4, 200)
    heights, _, _ = ax_hist.hist(xt.flatten().numpy(), bins=40, range=(-4, 4), density=True, color="tab:blue",
                                 alpha=0.7)
    ax_hist.plot(grid, _normal_pdf(grid), color="black", lw=1)
    ax_hist.set_xlim(-4, 4)
    ax_hist.set_ylim(0, max(0.45, 1.05 * heights.max()))   # the clean digit's spikes are tall: never cut them off
    ax_hist.set_xlabel("pixel value", fontsize=7)
    ax_hist.tick_params(labelsize=7)


def noise_strip(x0: torch.Tensor, schedule: NoiseSchedule, timesteps=(0, 50, 100, 250, 500, 750, 999),
                seed: int = 0):
    """Static figure: one digit noised to several timesteps, histograms underneath.

    x0: (1, 1, 28, 28) in [-1, 1]. The same noise sample is used at every t, so
    only the amount of noise changes along the strip. Returns the Figure.
    """
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(2, len(timesteps), figsize=(1.6 * len(timesteps), 3.4),
                             gridspec_kw={"height_ratios": [1.4, 1]})
    for col, t in enumerate(timesteps):
        draw_noised(axes[0, col], axes[1, col], x0, int(t), schedule, noise)
    axes[1, 0].set_ylabel("density\n(black: N(0, 1))", fontsize=8)
    fig.tight_layout()
    return fig


def timestep_slider(x0: torch.Tensor, schedule: NoiseSchedule, seed: int = 0, t: int = 0):
    """A slider over t that redraws the noised digit and its histogram.

    x0: (1, 1, 28, 28) in [-1, 1]. Returns the ipywidgets box (display it, or
    let it be the cell's last expression).
    """
    import ipywidgets as widgets

    T = schedule.num_train_timesteps
    if not 0 <= t < T:
        raise ValueError(f"the slider starts at t={t}, but t must be in [0, {T - 1}]")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    slider = widgets.IntSlider(value=t, min=0, max=T - 1, step=1, description="timestep t",
                               continuous_update=False, layout=widgets.Layout(width="500px"))
    out = widgets.Output()

    def redraw(change=None):
        with out:
            out.clear_output(wait=True)
            fig, (ax_img, ax_hist) = plt.subplots(1, 2, figsize=(6, 2.6),
                                                  gridspec_kw={"width_ratios": [1, 1.6]})
            draw_noised(ax_img, ax_hist, x0, slider.value, schedule, noise)
            snr = schedule.snr(slider.value).item()
            ax_hist.set_title(f"pixel values vs N(0, 1)   SNR = {snr:.3g}", fontsize=9)
            fig.tight_layout()
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, out])


def plot_losses(losses, title: str = "training", ylabel: str = "loss", window: int = 20, ax=None, **ax_set):
    """Per-step losses (faint) and their running mean over ``window`` steps; returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.8))
    losses = torch.as_tensor(losses, dtype=torch.float32)
    ax.plot(losses.numpy(), alpha=0.4, label="per step")
    if len(losses) >= window:
        ax.plot(range(window - 1, len(losses)), losses.unfold(0, window, 1).mean(1).numpy(), label=f"mean of {window}")
    ax.set(xlabel="training step", ylabel=ylabel, title=title, **ax_set)
    ax.legend()
    ax.figure.tight_layout()
    return ax


DIGIT_COLOURS = plt.get_cmap("tab10")


def scatter_latents(z: torch.Tensor, labels: torch.Tensor, title: str = "", ax=None, size: float = 3):
    """The 2-D latent map: z (N, 2) coloured by digit label (N,); returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.2))
    z, labels = torch.as_tensor(z).detach().cpu(), torch.as_tensor(labels).cpu()
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"scatter_latents needs 2-D latents of shape (N, 2), got {tuple(z.shape)}")
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap=DIGIT_COLOURS, vmin=-0.5, vmax=9.5, s=size, alpha=0.8)
    ax.figure.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set(xlabel="$z_1$", ylabel="$z_2$", title=title)
    return ax


def decode_grid(decode, lo, hi, n: int = 12) -> torch.Tensor:
    """Decode an n x n grid of 2-D latent points spanning the box ``lo`` .. ``hi`` (each (z1, z2)).

    decode: (B, 2) -> (B, 1, 28, 28) in [0, 1]. Returns one (n * 28, n * 28) image, z2 growing upwards
    so it lines up with ``scatter_latents``.
    """
    z1 = torch.linspace(float(lo[0]), float(hi[0]), n)
    z2 = torch.linspace(float(hi[1]), float(lo[1]), n)         # top row = largest z2
    points = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], -1).reshape(-1, 2)
    with torch.no_grad():
        tiles = decode(points).reshape(n, n, 28, 28)
    return tiles.permute(0, 2, 1, 3).reshape(n * 28, n * 28)


def plot_similarity(similarity: torch.Tensor, row_labels=None, col_labels=None, title: str = "", ax=None,
                    vmin: float = -1.0, vmax: float = 1.0, colorbar_label: str = "cosine similarity"):
    """A similarity matrix as a heat map: similarity (R, C), e.g. cosine similarities in [-1, 1]; returns the Axes.

    Used for CLIP's image-vs-caption matrix (the diagonal holds the matching pairs) and, later,
    for attention maps.
    """
    similarity = torch.as_tensor(similarity).detach().cpu()
    if similarity.ndim != 2:
        raise ValueError(f"plot_similarity needs a 2-D matrix, got shape {tuple(similarity.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * similarity.shape[1] + 2, 0.45 * similarity.shape[0] + 1))
    image = ax.imshow(similarity.numpy(), cmap="viridis", vmin=vmin, vmax=vmax)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    for axis, labels in ((ax.set_yticks, row_labels), (ax.set_xticks, col_labels)):
        if labels is not None:
            axis(range(len(labels)), labels=[str(label) for label in labels], fontsize=8)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_title(title, fontsize=10)
    return ax
