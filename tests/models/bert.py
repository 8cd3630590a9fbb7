"""BERT-shaped GGUF files from numpy weights (HF names), and a float64 numpy forward pass
of the same weights: the reference llama.cpp's embeddings and rank scores are checked
against. No torch: numpy and the ``gguf`` package only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# Embedding tables llama.cpp reads with get_rows stay F32, as its own converter keeps them.
KEEP_F32 = ("embeddings.position_embeddings", "embeddings.token_type_embeddings")


@dataclass(frozen=True)
class BertShape:
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_ctx: int
    eps: float = 1e-12


def write_gguf(
    path: Path,
    shape: BertShape,
    weights: dict[str, np.ndarray],
    tokens: list[str],
    token_types: list[int],
    pooling: gguf.PoolingType,
    name: str,
    f16: bool = True,
) -> None:
    """A ``bert`` GGUF with a WordPiece vocabulary (CLS 101 / SEP 102 style ids taken
    from ``tokens``); weights in F16 (matrices, unless ``f16`` is off) and F32 (vectors,
    position tables)."""
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_block_count(shape.n_layer)
    writer.add_head_count(shape.n_head)
    writer.add_layer_norm_eps(shape.eps)
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_type_count(2)
    index = {token: i for i, token in enumerate(tokens)}
    writer.add_bos_token_id(index["[CLS]"])
    writer.add_eos_token_id(index["[SEP]"])
    writer.add_sep_token_id(index["[SEP]"])
    writer.add_unk_token_id(index["[UNK]"])
    writer.add_pad_token_id(index["[PAD]"])
    writer.add_mask_token_id(index["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", True)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, shape.n_layer)
    for hf_name, value in weights.items():
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue  # BERT's pooler is not part of sentence embeddings; ids are 0..n
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(f"no GGUF name for {hf_name}")
        keep = not f16 or value.ndim == 1 or hf_name.startswith(KEEP_F32)
        writer.add_tensor(name, value.astype(np.float32 if keep else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def wordpiece_tokens(vocab: dict[str, int]) -> tuple[list[str], list[int]]:
    """llama.cpp's WPM vocabulary: a word-start piece gets ``▁``, ``##x`` becomes ``x``;
    bracketed special tokens stay as they are (and are control tokens)."""
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    types = []
    for i, token in enumerate(tokens):
        if token.startswith("[") and token.endswith("]"):
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.NORMAL)
            tokens[i] = token[2:] if token.startswith("##") else "\u2581" + token
    return tokens, types


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)


def forward(weights: dict[str, np.ndarray], shape: BertShape, tokens: list[int]) -> np.ndarray:
    """The last hidden states (tokens x n_embd), float64, one sequence, token type 0."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n = len(tokens)
    x = (
        w["embeddings.word_embeddings.weight"][tokens]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], shape.eps)
    d = shape.n_embd // shape.n_head
    for i in range(shape.n_layer):
        p = f"encoder.layer.{i}."

        def linear(x: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return x @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            linear(x, f"attention.self.{m}").reshape(n, shape.n_head, d).transpose(1, 0, 2)
            for m in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        attention = attention.transpose(1, 0, 2).reshape(n, shape.n_embd)
        norm = p + "attention.output.LayerNorm."
        x = _layer_norm(
            x + linear(attention, "attention.output.dense"),
            w[norm + "weight"],
            w[norm + "bias"],
            shape.eps,
        )
        h = linear(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = _layer_norm(
            x + linear(h, "output.dense"),
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            shape.eps,
        )
    return x


def mean_pooled(weights: dict[str, np.ndarray], shape: BertShape, tokens: list[int]) -> np.ndarray:
    vector = forward(weights, shape, tokens).mean(0)
    return vector / np.linalg.norm(vector)


def rank_score(weights: dict[str, np.ndarray], shape: BertShape, tokens: list[int]) -> float:
    """A cross-encoder's score: the CLS state through the pooler (tanh) and the
    classifier, as llama.cpp's rank pooling computes it."""
    cls = forward(weights, shape, tokens)[0]
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    pooled = np.tanh(w["classifier.dense.weight"] @ cls + w["classifier.dense.bias"])
    return float((w["classifier.out_proj.weight"] @ pooled + w["classifier.out_proj.bias"])[0])
