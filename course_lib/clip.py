"""A small CLIP for captioned MNIST: a Transformer text encoder and a CNN image encoder in one embedding space.

    model = CLIP()
    text = model.encode_text(["a thick seven", "a thin one"])     # (2, embed_dim), unit length
    image = model.encode_image(digits)                            # (B, embed_dim), unit length
    similarity = image @ text.T                                   # cosine similarities, (B, 2)

Training (Radford et al., 2021) takes a batch of B (image, caption) pairs and scores all
B x B combinations; the loss is the cross-entropy of picking the right caption for each
image *and* the right image for each caption (symmetric), with a learnable temperature.
Nothing tells the model what a "seven" or "thick" is: it learns both from which captions
go with which pictures.

The text encoder is the one latent diffusion conditions on: ``text_encoder(ids)`` returns
the whole sequence of token embeddings (B, L, width), like Stable Diffusion's 77 x 768,
and ``clip_skip=1`` takes them from the penultimate layer ("CLIP skip").
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention
from .captions import caption, words_from_codes
from .tokenizer import CONTEXT_LENGTH, Tokenizer, default_vocabulary
from .validate import batched, check_digits


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: x + attention(LN(x)), then x + MLP(LN(x)). (B, L, width) -> same."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiHeadAttention(width, num_heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class TextEncoder(nn.Module):
    """Token ids (B, L) -> (token embeddings (B, L, width), pooled (B, width)).

    Like CLIP's: learned token and position embeddings, causal self-attention (each token sees
    itself and the ones before it), a final LayerNorm; the pooled vector is read at the <end> token,
    the first position that has seen the whole text.
    """

    def __init__(self, vocab_size: int, context_length: int = CONTEXT_LENGTH, width: int = 64,
                 num_layers: int = 3, num_heads: int = 4, end_id: int = 2):
        super().__init__()
        self.context_length, self.end_id = context_length, end_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads) for _ in range(num_layers))
        self.ln_final = nn.LayerNorm(width)
        self.register_buffer("causal_mask", torch.ones(context_length, context_length).tril().bool(), persistent=False)

    def forward(self, ids: torch.Tensor, clip_skip: int = 0):
        if ids.ndim != 2 or ids.shape[1] != self.context_length:
            raise ValueError(f"expected token ids of shape (B, {self.context_length}), got {tuple(ids.shape)}; "
                             "use the tokenizer to make them")
        if not 0 <= clip_skip < len(self.blocks):
            raise ValueError(f"clip_skip must be between 0 and {len(self.blocks) - 1}, got {clip_skip}")
        x = self.token_embedding(ids) + self.position_embedding
        for block in self.blocks[: len(self.blocks) - clip_skip]:
            x = block(x, attn_mask=self.causal_mask)
        hidden = self.ln_final(x)
        end = (ids == self.end_id).int().argmax(1)
        return hidden, hidden[torch.arange(len(ids)), end]


class ImageEncoder(nn.Module):
    """A small CNN: (B, 1, 28, 28) in [0, 1] -> (B, width)."""

    def __init__(self, channels: int = 32, width: int = 128):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.SiLU(),      # 14 x 14
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GroupNorm(8, 2 * c), nn.SiLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * c), nn.SiLU(),  # 7 x 7
            nn.Flatten(), nn.Linear(4 * c * 49, width))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


class CLIP(nn.Module):
    """Text and image encoders, each projected to ``embed_dim``, and a learnable temperature."""

    def __init__(self, embed_dim: int = 64, text_width: int = 64, text_layers: int = 3, text_heads: int = 4,
                 image_channels: int = 32, image_width: int = 128, context_length: int = CONTEXT_LENGTH):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, text_width=text_width, text_layers=text_layers,
                           text_heads=text_heads, image_channels=image_channels, image_width=image_width,
                           context_length=context_length)
        self.tokenizer = Tokenizer(default_vocabulary(), context_length)
        self.text_encoder = TextEncoder(len(self.tokenizer), context_length, text_width, text_layers, text_heads,
                                        end_id=self.tokenizer.end_id)
        self.image_encoder = ImageEncoder(image_channels, image_width)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.image_projection = nn.Linear(image_width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))   # CLIP's starting temperature 0.07

    def encode_text(self, texts, clip_skip: int = 0) -> torch.Tensor:
        """A string, a list of strings or token ids (B, L) -> L2-normalised embeddings (B, embed_dim)."""
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenizer(texts)
        ids = ids.to(self.logit_scale.device)
        _, pooled = self.text_encoder(ids, clip_skip=clip_skip)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> L2-normalised embeddings (B, embed_dim)."""
        check_digits(images)
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B_images, B_texts): cosine similarities times exp(logit_scale)."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()      # CLIP caps the scale at 100
        return scale * self.encode_image(images) @ self.encode_text(ids).T


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy: image i's caption is text i, and text i's image is image i. (B, B) -> scalar."""
    targets = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


def clip_training_loss(model, batch, generator):
    """For ``train``: batch = (images (B, 1, 28, 28), labels (B,), attribute codes (B, 3)).

    A fresh caption is drawn for every image at every step (template and words vary),
    so the model learns the words, not one sentence per image.
    """
    images, labels, codes = batch
    texts = [caption(int(d), words_from_codes(c), generator) for d, c in zip(labels, codes)]
    return contrastive_loss(model(images, model.tokenizer(texts)))


@torch.no_grad()
def embed_images(model: CLIP, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``model.encode_image`` in batches, without gradients: (N, 1, 28, 28) in [0, 1] -> (N, embed_dim)."""
    return batched(model.encode_image, images, batch_size)


def _check_embeddings(image_embeddings: torch.Tensor, model: CLIP) -> None:
    dim = model.text_projection.out_features
    if image_embeddings.ndim != 2 or image_embeddings.shape[1] != dim:
        raise ValueError(f"expected image embeddings (N, {dim}) from embed_images(model, images), "
                         f"got {tuple(image_embeddings.shape)}")


@torch.no_grad()
def zero_shot_classify(model: CLIP, image_embeddings: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Index of the most similar prompt for each image: image embeddings (N, D) -> (N,) int64."""
    _check_embeddings(image_embeddings, model)
    return (image_embeddings @ model.encode_text(prompts).T).argmax(1)


@torch.no_grad()
def retrieve(model: CLIP, text: str, image_embeddings: torch.Tensor, k: int = 10):
    """The ``k`` images most similar to ``text``, from image embeddings (N, D): (indices (k,), similarities (k,))."""
    _check_embeddings(image_embeddings, model)
    top = (image_embeddings @ model.encode_text([text])[0]).topk(min(k, len(image_embeddings)))
    return top.indices, top.values


def retrieval_precision(model: CLIP, text: str, image_embeddings: torch.Tensor, relevant: torch.Tensor,
                        k: int = 10) -> float:
    """Share of the top-``k`` images for ``text`` that are relevant (``relevant``: (N,) bool)."""
    indices, _ = retrieve(model, text, image_embeddings, k=k)
    return relevant[indices].float().mean().item()


def linear_probe(train_embeddings: torch.Tensor, train_labels: torch.Tensor,
                 test_embeddings: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Accuracy on the test digits of a logistic regression fitted on frozen image embeddings (N, D)."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000)
    probe.fit(train_embeddings.cpu().numpy(), train_labels.numpy())
    return float(probe.score(test_embeddings.cpu().numpy(), test_labels.numpy()))
