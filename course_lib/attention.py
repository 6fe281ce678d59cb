"""Attention, written out: scaled dot-product attention and a self-attention block for images.

    attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

Queries ask, keys answer "how relevant am I?", values are what gets mixed. In
*self*-attention all three come from the same feature map, so every pixel can
look at every other pixel. In *cross*-attention the queries come from the image's
features and the keys and values from text tokens: every pixel asks "which words are
about me?", and mixes in what those words say. That is how a prompt steers the U-Net
of latent diffusion (chapter 05).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 return_weights: bool = False, attn_mask: torch.Tensor | None = None):
    """softmax(Q K^T / sqrt(d)) V, the same maths as ``torch.nn.functional.scaled_dot_product_attention``.

    query: (..., L, d); key: (..., S, d); value: (..., S, d_v). Returns (..., L, d_v),
    plus the attention weights (..., L, S) (each row sums to 1) if ``return_weights``.
    attn_mask: boolean, broadcastable to (..., L, S); True where a query may look at a key.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"queries and keys need the same last dimension, got {query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"keys and values need the same length, got {key.shape[-2]} and {value.shape[-2]}")
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    out = weights @ value
    return (out, weights) if return_weights else out


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, d) -> (B, num_heads, L, d / num_heads): each head gets its own slice of every token's numbers.

    The token order must survive: reshape to (B, L, heads, d / heads) first, then swap the two middle axes
    (reshaping straight to (B, heads, L, ...) would deal one token's numbers out to several tokens).
    """
    b, length, dim = x.shape
    if dim % num_heads:
        raise ValueError(f"the width ({dim}) must be divisible by num_heads ({num_heads})")
    return x.view(b, length, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d_head) -> (B, L, heads * d_head): the inverse of ``split_heads``."""
    b, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(b, length, heads * d_head)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection.

    x: (B, C, H, W) -> (B, C, H, W). Each of the H*W positions is a token of C numbers.
    The attention weights of the last call are kept in ``last_weights`` (B, heads, HW, HW)
    when ``store_weights`` is True, for plotting.
    """

    def __init__(self, channels: int, num_heads: int = 4, num_groups: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)
        self.store_weights = False
        self.last_weights = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                        # (B, HW, C)
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        heads = [split_heads(z, self.num_heads) for z in (q, k, v)]
        out, weights = scaled_dot_product_attention(*heads, return_weights=True)
        if self.store_weights:
            self.last_weights = weights.detach()
        out = merge_heads(out)                                                  # (B, HW, C), heads back together
        return x + self.to_out(out).transpose(1, 2).view(b, c, h, w)


class MultiHeadAttention(nn.Module):
    """Multi-head attention over token sequences: self-attention, or cross-attention with ``context``.

    x: (B, L, dim) gives the queries. Keys and values come from ``context`` (B, S, context_dim)
    when given (cross-attention: image features asking text tokens), else from x itself.
    Returns (B, L, dim). ``attn_mask`` (bool, broadcastable to (B, heads, L, S)): True = may attend.
    """

    def __init__(self, dim: int, num_heads: int = 4, context_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.is_cross_attention = context_dim is not None
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim or dim, dim)
        self.to_v = nn.Linear(context_dim or dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.store_weights = False
        self.last_weights = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (split_heads(z, self.num_heads) for z in (self.to_q(x), self.to_k(context), self.to_v(context)))
        if self.store_weights:
            out, weights = scaled_dot_product_attention(q, k, v, return_weights=True, attn_mask=attn_mask)
            self.last_weights = weights.detach()      # (B, heads, L, S): which keys each query looked at
        else:
            # The same maths in PyTorch's fused kernel (tests check they agree): faster, and it never
            # stores the (L, S) weights. diffusers makes the same swap (AttnProcessor2_0).
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(merge_heads(out))


class SpatialTransformer(nn.Module):
    """The attention block of Stable Diffusion's U-Net: self-attention, cross-attention to text, an MLP.

    x: (B, C, H, W) image features; context: (B, S, context_dim) text token embeddings.
    Returns (B, C, H, W). The H*W positions become tokens of C numbers; each sub-block is
    pre-norm and residual: tokens + self_attn(LN(tokens)), + cross_attn(LN(tokens), context),
    + MLP(LN(tokens)). The cross-attention weights (B, heads, H*W, S) say which words each
    position listened to (``attn2.last_weights`` when ``attn2.store_weights``, or ``record_attention``).
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4, num_groups: int = 8,
                 self_attention: bool = True):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.proj_in = nn.Linear(channels, channels)
        # Self-attention costs (H*W)^2: a large map can skip it and keep only the (cheap) cross-attention.
        self.norm1, self.attn1 = ((nn.LayerNorm(channels), MultiHeadAttention(channels, num_heads))
                                  if self_attention else (None, None))
        self.norm2, self.attn2 = nn.LayerNorm(channels), MultiHeadAttention(channels, num_heads, context_dim)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)    # starts as the identity: a new block cannot wreck the U-Net
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.attn2.to_k.in_features:
            raise ValueError(f"context must be text token embeddings (B={b}, S, {self.attn2.to_k.in_features}), "
                             f"got {tuple(context.shape)}")
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))         # (B, HW, C)
        if self.attn1 is not None:
            tokens = tokens + self.attn1(self.norm1(tokens))                    # pixels look at pixels
        tokens = tokens + self.attn2(self.norm2(tokens), context)               # pixels look at words
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + self.proj_out(tokens).transpose(1, 2).reshape(b, c, h, w)


@contextmanager
def record_attention(model: nn.Module, kind: str = "cross"):
    """Record every cross-attention (or, with ``kind="self"``, self-attention) map ``model`` computes inside the
    ``with`` block.

        with record_attention(unet) as maps:
            unet(latents, t, encoder_hidden_states=text)
        maps["down.0.blocks.1.attn2"]   # list, one (B, heads, H*W, S) tensor per call

    Cross-attention maps are (B, heads, pixels, text tokens), self-attention maps (B, heads, pixels, pixels).
    """
    if kind not in ("cross", "self"):
        raise ValueError(f"kind must be 'cross' or 'self', got {kind!r}")
    maps: dict[str, list[torch.Tensor]] = {}
    hooks, layers = [], []
    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention) and module.is_cross_attention == (kind == "cross"):
            module.store_weights = True
            layers.append(module)
            hooks.append(module.register_forward_hook(
                lambda mod, args, out, name=name: maps.setdefault(name, []).append(mod.last_weights)))
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()
        for module in layers:
            module.store_weights, module.last_weights = False, None
