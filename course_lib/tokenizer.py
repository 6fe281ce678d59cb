"""A word-level tokenizer with a fixed vocabulary: text -> token ids, as CLIP's text encoder wants them.

    >>> tok = Tokenizer()
    >>> tok(["a thick seven"])                 # (B, context_length) int64
    tensor([[ 1,  3, 24, 20,  2,  0,  0,  0,  0,  0,  0,  0]])
    >>> tok.decode(tok(["a thick seven"])[0])
    'a thick seven'

Every text becomes ``<start> words... <end>`` followed by ``<pad>`` up to
``context_length`` (Stable Diffusion's CLIP uses 77; our captions need 12). Longer
texts are truncated, keeping ``<end>`` last, as CLIP does. Stable Diffusion's
tokenizer splits words into sub-word pieces (byte-pair encoding) so it never meets
an unknown word; ours knows only the words of the course's captions, and says so
clearly, with the closest known words, when it meets another one.
"""

from __future__ import annotations

import difflib
import re

import torch

from .captions import ATTRIBUTES, DIGIT_WORDS

PAD, START, END = "<pad>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, START, END)
CAPTION_WORDS = ("a", "an", "the", "digit", "handwritten", "picture", "of", "written", "and", ",")
CONTEXT_LENGTH = 12


def default_vocabulary() -> list[str]:
    """The special tokens, then every word the captions use, in a fixed order (the ids never change)."""
    attribute_words = [w for pair in ATTRIBUTES.values() for w in pair]
    return [*SPECIAL_TOKENS, *CAPTION_WORDS, *DIGIT_WORDS, *attribute_words, *(str(d) for d in range(10))]


class UnknownWordError(ValueError):
    """A word outside the tokenizer's vocabulary."""


class Tokenizer:
    """Word-level tokenizer: ``tokenizer(texts) -> (B, context_length)`` int64 ids; ``decode(ids) -> str``."""

    def __init__(self, vocabulary: list[str] | None = None, context_length: int = CONTEXT_LENGTH):
        self.vocabulary = list(vocabulary or default_vocabulary())
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ValueError("the vocabulary has repeated words")
        if context_length < 3:
            raise ValueError(f"context_length must leave room for <start>, a word and <end>, got {context_length}")
        self.ids = {word: i for i, word in enumerate(self.vocabulary)}
        self.context_length = context_length
        self.pad_id, self.start_id, self.end_id = (self.ids[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def split(self, text: str) -> list[str]:
        """Lower-case words and punctuation: "The digit 7, written small" -> [the, digit, 7, ",", written, small]."""
        if not isinstance(text, str):
            raise TypeError(f"each text (a prompt) must be a string, got {type(text).__name__} {text!r}")
        return re.findall(r"\w+|[^\w\s]", text.lower())

    def __call__(self, texts) -> torch.Tensor:
        """texts: a string or a list of strings -> (B, context_length) int64 token ids."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__} {texts!r}")
        if len(texts) == 0:
            raise ValueError("no texts given: pass a string or a non-empty list of strings")
        rows = []
        for text in texts:
            words = self.split(text)
            if not words:
                raise ValueError(f"the text {text!r} has no words; write a prompt such as {'a handwritten seven'!r}")
            for word in words:
                if word not in self.ids:
                    raise UnknownWordError(self._unknown_message(word, text))
            ids = [self.ids[w] for w in words][: self.context_length - 2]      # truncate, keep room for <end>
            ids = [self.start_id, *ids, self.end_id]
            rows.append(ids + [self.pad_id] * (self.context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def empty(self, n: int = 1) -> torch.Tensor:
        """(n, context_length) ids of the empty text, <start> <end> <pad>...: the "no prompt" of
        classifier-free guidance. (Calling the tokenizer with "" is refused, to catch empty prompts.)"""
        row = [self.start_id, self.end_id] + [self.pad_id] * (self.context_length - 2)
        return torch.tensor([row], dtype=torch.long).repeat(n, 1)     # (0, context_length) when n is 0

    def decode(self, ids) -> str:
        """(context_length,) ids -> the text between <start> and <end>."""
        words = []
        for i in torch.as_tensor(ids).tolist():
            if i == self.end_id:
                break
            if i not in (self.start_id, self.pad_id):
                words.append(self.vocabulary[i])
        return " ".join(words).replace(" ,", ",")

    def end_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Index of the <end> token in each row, (B, L) -> (B,): where CLIP reads its pooled text vector."""
        return (ids == self.end_id).int().argmax(1)

    def _unknown_message(self, word: str, text: str) -> str:
        close = difflib.get_close_matches(word, [w for w in self.vocabulary if w not in SPECIAL_TOKENS], n=3, cutoff=0.5)
        suggestion = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(w for w in self.vocabulary if w.isalpha())
        comma = ", the comma" if "," in self.vocabulary else ""
        return (f"the word {word!r} in {text!r} is not in the vocabulary.{suggestion} "
                f"This small CLIP knows only the words of its captions: {known}{comma} and the digits 0-9.")
