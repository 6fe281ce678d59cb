"""Attention, written out: scaled dot-product attention and a self-attention block for images.

    attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

Queries ask, keys answer "how relevant am I?", values are what gets mixed. In
*self*-attention all three come from the same feature map, so every pixel can
look at every other pixel. (Chapter 05 adds *cross*-attention, where keys and
values come from text tokens.)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


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
        split = lambda z: z.view(b, h * w, self.num_heads, c // self.num_heads).transpose(1, 2)
        out, weights = scaled_dot_product_attention(split(q), split(k), split(v), return_weights=True)
        if self.store_weights:
            self.last_weights = weights.detach()
        out = out.transpose(1, 2).reshape(b, h * w, c)                          # heads back together
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
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim or dim, dim)
        self.to_v = nn.Linear(context_dim or dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.store_weights = False
        self.last_weights = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, dim = x.shape
        split = lambda z: z.view(b, z.shape[1], self.num_heads, dim // self.num_heads).transpose(1, 2)
        out, weights = scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)),
                                                    split(self.to_v(context)), return_weights=True,
                                                    attn_mask=attn_mask)
        if self.store_weights:
            self.last_weights = weights.detach()      # (B, heads, L, S): which keys each query looked at
        return self.to_out(out.transpose(1, 2).reshape(b, n, dim))
