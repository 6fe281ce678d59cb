"""The U-Net that predicts the noise in x_t (DDPM's denoiser), small enough for a CPU.

Shape of the default model on a 28 x 28 digit (base_channels = 32):

    x_t (B, 1, 28, 28) --conv_in--> 32 @ 28x28 ----------------------------- skip --> up 32 @ 28x28 --conv_out--> eps (B, 1, 28, 28)
                                      |  ResBlock                                         ^ ResBlock
                                      v  down                                             |  up
                                    64 @ 14x14 ----------------------------- skip --> up 64 @ 14x14
                                      |  ResBlock                                         ^ ResBlock
                                      v  down                                             |  up
                                    64 @ 7x7   ResBlock + self-attention -- skip --> ResBlock + self-attention
                                      \\---------- middle: ResBlock, attention, ResBlock ---/

* The **down path** halves the resolution and widens the channels: it sees more and more of the digit at once.
* The **up path** mirrors it back to 28 x 28; **skip connections** hand each level's features across,
  so fine detail lost on the way down is not lost for good.
* Every ResBlock receives the **timestep embedding** (sinusoidal features of t, then an MLP), added to its
  feature map: the same weights must remove a whisper of noise at t = 5 and a storm at t = 950.
* **Self-attention** at the 7 x 7 level lets every region see every other one.

With ``context_dim`` set, the same U-Net becomes the *conditional* U-Net of latent diffusion
(``UNet2DConditionModel`` in diffusers): each attention level gets a ``SpatialTransformer``
after its ResBlock, whose cross-attention reads the text encoder's token embeddings
(``encoder_hidden_states``), so every level can ask the prompt what to draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import SelfAttention2d, SpatialTransformer


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of the timestep, as in the Transformer and DDPM papers.

    timesteps: (B,) ints or floats. Returns (B, dim): [cos(t * f_i), sin(t * f_i)] for
    frequencies f_i spread geometrically from 1 to 1/max_period, so nearby t get
    similar vectors and far-apart t clearly different ones.
    """
    if dim % 2:
        raise ValueError(f"dim, the embedding dimension, must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(timesteps.device)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, the time embedding added in between, and a residual path.

    x: (B, C_in, H, W), emb: (B, emb_dim) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, num_groups: int = 8,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]      # "which t is this?" in every block
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """Noise-prediction U-Net: ``model(x_t, t) -> predicted noise`` with x_t's shape.

    sample: (B, in_channels, H, W), H and W divisible by 2**(len(channel_mults) - 1);
    timestep: (B,) ints in [0, T-1] (or one int for the whole batch).

    in_channels / out_channels: 1 for MNIST pixels (later: the VAE's latent channels).
    base_channels, channel_mults: width per level (default 32, 64, 64 at 28, 14, 7 pixels).
    num_res_blocks: ResBlocks per level on the way down (one more on the way up, for the skips).
    attention_levels: which levels get an attention block (default: the lowest resolution only).
    context_dim: None for an unconditional U-Net (self-attention blocks); the width of the text
    token embeddings for a text-conditioned one (``SpatialTransformer`` blocks with cross-attention,
    and ``forward`` then needs ``encoder_hidden_states`` (B, S, context_dim)).
    self_attention_levels: with ``context_dim``, which levels' blocks also get self-attention (default:
    the same as ``attention_levels``; the middle block always has it). Self-attention costs (H*W)^2,
    so skipping it on the largest map saves much time while cross-attention stays everywhere.
    pad_to_multiple: zero-pad inputs whose H, W are not divisible (7 x 7 latents -> 8 x 8) and crop
    the output back, instead of refusing them.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 32,
                 channel_mults=(1, 2, 2), num_res_blocks: int = 1, attention_levels=(False, False, True),
                 num_heads: int = 4, dropout: float = 0.0, context_dim: int | None = None,
                 self_attention_levels=None, pad_to_multiple: bool = False):
        super().__init__()
        if len(attention_levels) != len(channel_mults):
            raise ValueError("attention_levels needs one True/False per entry of channel_mults")
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                           channel_mults=tuple(channel_mults), num_res_blocks=num_res_blocks,
                           attention_levels=tuple(attention_levels), num_heads=num_heads, dropout=dropout)
        self_attention_levels = tuple(attention_levels if self_attention_levels is None else self_attention_levels)
        if len(self_attention_levels) != len(channel_mults):
            raise ValueError("self_attention_levels needs one True/False per entry of channel_mults")
        if context_dim is not None or pad_to_multiple:    # keep the DDPM checkpoint's config as it was
            self.config.update(context_dim=context_dim, self_attention_levels=self_attention_levels,
                               pad_to_multiple=pad_to_multiple)
        self.context_dim, self.pad_to_multiple = context_dim, pad_to_multiple

        def attention(ch, level=None):
            if context_dim is None:
                return SelfAttention2d(ch, num_heads)
            return SpatialTransformer(ch, context_dim, num_heads,
                                      self_attention=level is None or self_attention_levels[level])

        self.in_channels = in_channels
        self.num_levels = len(channel_mults)
        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.base_channels = base_channels
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        widths = [base_channels * m for m in channel_mults]
        self.down = nn.ModuleList()
        skip_channels, ch = [base_channels], base_channels
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width, emb_dim, dropout=dropout))
                ch = width
                blocks.append(attention(ch, level) if attention_levels[level] else nn.Identity())
                skip_channels.append(ch)
            downsample = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if level < self.num_levels - 1 else nn.Identity()
            if level < self.num_levels - 1:
                skip_channels.append(ch)
            self.down.append(nn.ModuleDict({"blocks": blocks, "downsample": downsample}))

        self.mid1 = ResBlock(ch, ch, emb_dim, dropout=dropout)
        self.mid_attn = attention(ch)
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout=dropout)

        self.up = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            width = widths[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch + skip_channels.pop(), width, emb_dim, dropout=dropout))
                ch = width
                blocks.append(attention(ch, level) if attention_levels[level] else nn.Identity())
            upsample = (nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
                        if level > 0 else nn.Identity())
            self.up.append(nn.ModuleDict({"blocks": blocks, "upsample": upsample}))

        self.norm_out = nn.GroupNorm(8, ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)   # start by predicting "no noise": a calm first step of training
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, C, H, W), timestep (B,) or int, encoder_hidden_states (B, S, context_dim) or None."""
        self._check_input(sample, encoder_hidden_states)
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(sample.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.base_channels))
        height, width = sample.shape[2:]
        factor = 2 ** (self.num_levels - 1)
        if height % factor or width % factor:     # only reached with pad_to_multiple
            sample = F.pad(sample, (0, -width % factor, 0, -height % factor))

        def attend(attn, h):
            return attn(h, encoder_hidden_states) if isinstance(attn, SpatialTransformer) else attn(h)

        h = self.conv_in(sample)
        skips = [h]
        for level in self.down:
            blocks = level["blocks"]
            for res, attn in zip(blocks[::2], blocks[1::2]):
                h = attend(attn, res(h, emb))
                skips.append(h)
            if not isinstance(level["downsample"], nn.Identity):
                h = level["downsample"](h)
                skips.append(h)

        h = self.mid2(attend(self.mid_attn, self.mid1(h, emb)), emb)

        for level in self.up:
            blocks = level["blocks"]
            for res, attn in zip(blocks[::2], blocks[1::2]):
                h = attend(attn, res(torch.cat([h, skips.pop()], dim=1), emb))
            h = level["upsample"](h)
        return self.conv_out(F.silu(self.norm_out(h)))[:, :, :height, :width]

    def _check_input(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> None:
        factor = 2 ** (self.num_levels - 1)
        if sample.ndim != 4 or sample.shape[1] != self.in_channels:
            raise ValueError(f"sample must be (B, {self.in_channels}, H, W) for this UNet, got {tuple(sample.shape)}")
        if (sample.shape[2] % factor or sample.shape[3] % factor) and not self.pad_to_multiple:
            raise ValueError(f"sample's H and W must be divisible by {factor}, got {tuple(sample.shape[2:])} "
                             "(or build the UNet with pad_to_multiple=True)")
        if self.context_dim is None and encoder_hidden_states is not None:
            raise ValueError("this UNet is unconditional (context_dim=None); it takes no encoder_hidden_states")
        if self.context_dim is not None:
            expected = f"(B={sample.shape[0]}, S, {self.context_dim})"
            if encoder_hidden_states is None:
                raise ValueError(f"this UNet is text-conditioned: pass encoder_hidden_states {expected}, "
                                 "the text encoder's token embeddings")
            if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != sample.shape[0] \
                    or encoder_hidden_states.shape[2] != self.context_dim:
                raise ValueError(f"encoder_hidden_states must be {expected}, got {tuple(encoder_hidden_states.shape)}")


def deepen(unet: UNet) -> UNet:
    """A U-Net with one more ResBlock (and attention block, where the level has one) per level that computes exactly
    what ``unet`` computes; ``unet`` is left as it was.

    Net2Net's "deeper" move (Chen et al. 2016): a block whose residual branch ends in zeros passes its input through,
    so a second training stage can start from a trained, shallower network and grow it instead of starting over.
    On the way down the new block goes last in each level, so the skip it hands across repeats the one before it.
    On the way up it goes second: the first block takes that repeated skip, the same value it took before; the new
    one takes the skip the first used to take and ignores it (its 1x1 shortcut passes the features through and
    drops the skip); every later block takes what it took before.
    """
    k = unet.config["num_res_blocks"]
    deeper = UNet(**{**unet.config, "num_res_blocks": k + 1}).to(next(unet.parameters()).device)
    state = deeper.state_dict()
    for key, value in unet.state_dict().items():
        parts = key.split(".")
        if parts[0] == "up" and parts[2] == "blocks" and int(parts[3]) >= 2:   # up blocks after the first move on one
            parts[3] = str(int(parts[3]) + 2)
        state[".".join(parts)] = value.clone()
    deeper.load_state_dict(state)
    new_blocks = [(level["blocks"][2 * k], level["blocks"][2 * k + 1]) for level in deeper.down]
    new_blocks += [(level["blocks"][2], level["blocks"][3]) for level in deeper.up]
    with torch.no_grad():
        for res, attn in new_blocks:
            nn.init.zeros_(res.conv2.weight)                     # the residual branch adds nothing
            nn.init.zeros_(res.conv2.bias)
            if isinstance(res.skip, nn.Conv2d):                  # up: [features, skip] -> features
                width = res.skip.out_channels
                res.skip.weight.zero_()
                res.skip.weight[:, :width, 0, 0] = torch.eye(width)
                res.skip.bias.zero_()
            out = getattr(attn, "to_out", None) or getattr(attn, "proj_out", None)   # None for nn.Identity
            if out is not None:
                nn.init.zeros_(out.weight)                       # attention adds nothing either
                nn.init.zeros_(out.bias)
    return deeper
