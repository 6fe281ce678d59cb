"""course_lib.clip and the attention it is built on: shapes, unit vectors, the loss, causality, CLIP skip."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.attention import MultiHeadAttention, scaled_dot_product_attention
from course_lib.clip import CLIP, contrastive_loss, embed_images, retrieve, zero_shot_classify


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CLIP().eval()


def test_attention_matches_pytorch_with_masks_and_cross_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 4, 7, 8, generator=g), torch.randn(2, 4, 7, 8, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[:, 0] = True                                        # every query may look somewhere
    assert torch.allclose(scaled_dot_product_attention(q, k, v, attn_mask=mask),
                          F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    attn = MultiHeadAttention(16, num_heads=4, context_dim=12)
    x, context = torch.randn(3, 5, 16, generator=g), torch.randn(3, 7, 12, generator=g)
    split = lambda z: z.view(3, -1, 4, 4).transpose(1, 2)
    expected = F.scaled_dot_product_attention(split(attn.to_q(x)), split(attn.to_k(context)), split(attn.to_v(context)))
    assert torch.allclose(attn(x, context), attn.to_out(expected.transpose(1, 2).reshape(3, 5, 16)), atol=1e-5)


def test_embeddings_are_unit_vectors_of_the_right_shape(model):
    with torch.no_grad():
        text = model.encode_text(["a thick seven", "the digit 1, written small", "a thin eight"])
        image = model.encode_image(torch.rand(4, 1, 28, 28))
    assert text.shape == (3, 64) and image.shape == (4, 64)
    assert torch.allclose(text.norm(dim=1), torch.ones(3)) and torch.allclose(image.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model.encode_image(torch.rand(28, 28))


def test_contrastive_loss():
    b = 6
    assert contrastive_loss(torch.zeros(b, b)).item() == pytest.approx(math.log(b))   # no idea: chance level
    assert contrastive_loss(20 * torch.eye(b)).item() < 1e-6                           # every pair recognised
    logits = torch.randn(b, b, generator=torch.Generator().manual_seed(1))
    targets = torch.arange(b)
    by_hand = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    assert contrastive_loss(logits).item() == pytest.approx(by_hand.item())


def test_text_encoder_is_causal_and_clip_skip_uses_the_penultimate_layer(model):
    ids = model.tokenizer(["a thick seven", "a thick eight"])
    with torch.no_grad():
        hidden, pooled = model.text_encoder(ids)
        skipped, _ = model.text_encoder(ids, clip_skip=1)
    assert hidden.shape == (2, model.tokenizer.context_length, 64) and pooled.shape == (2, 64)
    assert torch.allclose(hidden[0, :3], hidden[1, :3], atol=1e-6)        # "<start> a thick" cannot see what follows
    assert not torch.allclose(hidden[0, 3], hidden[1, 3])
    assert torch.equal(pooled[0], hidden[0, 4])                             # read at <end>
    assert not torch.allclose(skipped, hidden)
    with pytest.raises(ValueError, match="clip_skip"):
        model.text_encoder(ids, clip_skip=3)
    with pytest.raises(ValueError, match="tokenizer"):
        model.text_encoder(ids[:, :5])


def test_zero_shot_and_retrieval_use_the_similarities(model):
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    prompts = ["a handwritten one", "a handwritten two", "a handwritten three"]
    with torch.no_grad():
        sims = model.encode_image(images) @ model.encode_text(prompts).T
    embeddings = embed_images(model, images, batch_size=2)                  # batching changes nothing
    assert torch.allclose(embeddings, model.encode_image(images), atol=1e-6)
    assert torch.equal(zero_shot_classify(model, embeddings, prompts), sims.argmax(1))
    idx, values = retrieve(model, "a handwritten two", embeddings, k=2)
    assert torch.equal(idx, sims[:, 1].topk(2).indices) and torch.allclose(values, sims[:, 1].topk(2).values)
    with pytest.raises(ValueError, match="embed_images"):
        retrieve(model, "a handwritten two", images, k=2)                 # images where embeddings belong
