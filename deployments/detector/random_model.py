"""SAM 3 without a checkpoint (``weights: random``): the real transformers model code at a
small or full configuration with seeded random weights, and a real CLIP tokenizer whose BPE
merges are learned here from a fixed word list. The hub's checkpoint is gated and unreachable
from CI, so tests, offline development and GPU benchmarks build this instead; its masks mean
nothing."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer, Sam3Config, Sam3Model
from transformers.models.sam3.configuration_sam3 import (
    Sam3DETRDecoderConfig,
    Sam3DETREncoderConfig,
    Sam3GeometryEncoderConfig,
    Sam3MaskDecoderConfig,
    Sam3VisionConfig,
    Sam3ViTConfig,
)

from deployments.protocol.settings import DetectorSettings

# What the tokenizer's merges are learned from: annotation concepts, mostly surgical. Any other
# text still tokenizes (byte-level alphabet), one character per token.
WORDS = (
    "grasper",
    "surgical instrument",
    "gauze",
    "needle",
    "needle driver",
    "scissors",
    "hook",
    "clip",
    "clip applier",
    "trocar",
    "suction",
    "irrigator",
    "specimen bag",
    "tissue",
    "blood",
    "vessel",
    "person",
    "hand",
    "car",
    "dog",
    "cat",
    "ball",
    "square",
    "circle",
    "shape",
    "object",
    "red",
    "green",
    "blue",
    "white",
    "black",
    "small",
    "large",
    "the",
    "a",
    "of",
    "and",
    "with",
)

BOS, EOS, EOW = "<|startoftext|>", "<|endoftext|>", "</w>"
SMALL_IMAGE_SIZE = 224
SMALL_WIDTH = 64
SMALL_QUERIES = 32


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer (transformers' ``CLIPTokenizer``: CLIP's normalizer, pre-tokenizer,
    byte-level BPE and special tokens) whose merges are learned from ``WORDS``. Laid out as
    CLIP's vocabulary is: the special tokens, every byte alone and word-final (so no text maps
    to the unknown token), then one token per merge."""
    pipeline = CLIPTokenizer().backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for phrase in WORDS:
        normalized = pipeline.normalizer.normalize_str(phrase)
        for word, _ in pipeline.pre_tokenizer.pre_tokenize_str(normalized):
            words[(*word[:-1], word[-1] + EOW)] += 1
    merges = learn_merges(words)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [BOS, EOS, *alphabet, *(char + EOW for char in alphabet)]
    tokens += ["".join(pair) for pair in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def learn_merges(words: Counter[tuple[str, ...]]) -> list[tuple[str, str]]:
    """Byte-pair encoding as Sennrich et al. learn it: merge the most frequent adjacent pair
    of symbols until every word is one symbol. Ties go to the smaller pair, so every process
    learns the same merges (the ``tokenizers`` trainer breaks ties by ids it assigns in hash
    order, which differ from run to run)."""
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            merged[_merge(symbols, best)] += count
        words = merged


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    index = 0
    while index < len(symbols):
        if symbols[index : index + 2] == pair:
            out.append(pair[0] + pair[1])
            index += 2
        else:
            out.append(symbols[index])
            index += 1
    return tuple(out)


def build_config(settings: DetectorSettings, tokenizer: CLIPTokenizer) -> Sam3Config:
    """``small``: every part of SAM 3 at width 64 with one or two layers (a forward at 224 px
    takes a fraction of a second on a CPU); ``full``: transformers' default ``Sam3Config``,
    facebook/sam3's architecture. Both at ``settings.image_size`` when given."""
    if settings.random_architecture == "full":
        config = Sam3Config()
        if settings.image_size is not None:
            config.image_size = settings.image_size
        text = config.text_config
        text.bos_token_id, text.eos_token_id, text.pad_token_id = _special_ids(tokenizer)
        return config
    return _small_config(settings.image_size or SMALL_IMAGE_SIZE, tokenizer)


def build_model(settings: DetectorSettings, tokenizer: CLIPTokenizer) -> Sam3Model:
    """``Sam3Model`` with weights drawn from ``settings.seed`` (the global RNG is left as it
    was), on the CPU in float32."""
    config = build_config(settings, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return Sam3Model(config).eval()


def _special_ids(tokenizer: CLIPTokenizer) -> tuple[int, int, int]:
    return tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id


def _small_config(image_size: int, tokenizer: CLIPTokenizer) -> Sam3Config:
    width, heads = SMALL_WIDTH, 4
    parts = dict(hidden_size=width, num_attention_heads=heads, intermediate_size=2 * width)
    backbone = Sam3ViTConfig(
        **parts,
        num_hidden_layers=2,
        image_size=image_size,
        window_size=8,
        global_attn_indexes=[1],
    )
    bos, eos, pad = _special_ids(tokenizer)
    text = dict(
        vocab_size=len(tokenizer),
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,
        num_hidden_layers=2,
        num_attention_heads=heads,
        max_position_embeddings=32,
        hidden_act="gelu",
    )
    return Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=width),
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(**parts, num_layers=1),
        detr_encoder_config=Sam3DETREncoderConfig(**parts, num_layers=1),
        detr_decoder_config=Sam3DETRDecoderConfig(**parts, num_layers=1, num_queries=SMALL_QUERIES),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=width, num_attention_heads=heads),
    )
