"""Tokenizer and text encoder of the small generator, built here without downloads.

The tokenizer is a CLIP byte-level BPE (``vocab.json`` + ``merges.txt``, readable by
``transformers.CLIPTokenizer``) whose merges are learned from the caption corpus; every byte
stays in the vocabulary, so any text (a real store's titles) still tokenizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (same table as open_clip / GPT-2)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_clip_tokenizer_files(
    corpus: Iterable[str], out_dir: str | Path, *, num_merges: int = 600, max_length: int = 32
) -> Path:
    """Learn BPE merges from ``corpus`` and write a CLIPTokenizer folder to ``out_dir``.

    Returns ``out_dir``. Vocabulary = 256 byte symbols, their end-of-word forms, the merges,
    then the two special tokens (CLIP's layout, only much smaller).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if num_merges < 1:
        raise ValueError(f"num_merges must be >= 1, got {num_merges}")
    byte_map = bytes_to_unicode()
    alphabet = list(byte_map.values())
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    # CLIP splits words and punctuation apart; Whitespace() approximates its regex.
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) * 2 + num_merges,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator((c.lower() for c in corpus), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    vocab: dict[str, int] = {}
    for sym in alphabet:
        vocab[sym] = len(vocab)
    for sym in alphabet:
        vocab[sym + "</w>"] = len(vocab)
    kept: list[tuple[str, str]] = []
    for pair in merges:
        a, b = (pair if isinstance(pair, list) else pair.split(" "))[:2]
        merged = a + b
        if merged not in vocab:
            vocab[merged] = len(vocab)
        kept.append((a, b))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in kept), encoding="utf-8"
    )
    cfg: dict[str, Any] = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS})
    )
    return out


def load_tokenizer(folder: str | Path) -> Any:
    """``CLIPTokenizer`` from a folder written by :func:`build_clip_tokenizer_files`."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


@dataclass(frozen=True)
class TextEncoderSpec:
    """Hyperparameters of the small ``CLIPTextModel``."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_length: int = 32

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be divisible by num_heads, got {self.hidden_size} and "
                f"{self.num_heads}"
            )


def build_text_encoder(vocab_size: int, spec: TextEncoderSpec, *, seed: int) -> Any:
    """A randomly initialised ``CLIPTextModel`` (seeded); trained jointly with the UNet."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        max_position_embeddings=spec.max_length,
        projection_dim=spec.hidden_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModel(cfg)
