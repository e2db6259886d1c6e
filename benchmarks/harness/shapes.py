"""The shapes of the Genos models: random weights, real architectures, and their FLOPs.

python -m benchmarks.harness.shapes genos_1_2b genos_10b --work /tmp/bench-work
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    experts: int
    top_k: int
    moe_hidden: int
    vocab: int = 128

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def active_params(self) -> int:
        """Parameters one token passes through (attention, router, top-k experts)."""
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * self.head_dim
        ffn = self.top_k * 3 * self.hidden * self.moe_hidden
        return self.layers * (attn + self.hidden * self.experts + ffn)

    def total_params(self) -> int:
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * self.head_dim
        ffn = self.experts * 3 * self.hidden * self.moe_hidden
        return self.layers * (attn + self.hidden * self.experts + ffn) + self.vocab * self.hidden

    def flops(self, n_tokens: int) -> float:
        """Forward FLOPs of one window: 2 x active params per token, plus causal attention
        (QK^T and AV over the previous tokens: 2 n^2 d per layer)."""
        return 2.0 * self.active_params() * n_tokens + 2.0 * self.layers * n_tokens**2 * self.hidden


SHAPES = {
    # Genos-1.2B: hidden 1024, 12 layers, 16 heads / 8 KV heads, 8 experts top-2, MoE 4096.
    "genos_1_2b": Shape("genos_1_2b", 1024, 12, 16, 8, 8, 2, 4096),
    # Genos-10B: hidden 4096, MoE hidden 8192, otherwise the same.
    "genos_10b": Shape("genos_10b", 4096, 12, 16, 8, 8, 2, 8192),
    # The tiny test model (pipeline/models/tiny.py), for the CPU smoke run.
    "tiny": Shape("tiny", 256, 2, 4, 2, 4, 2, 512),
}


def build(shape: Shape, root: Path, device: str) -> Path:
    """A saved random-weight model of `shape` (bf16 on GPU), with the char-level tokenizer."""
    from pipeline.models.tiny import tiny_model_path

    tiny = tiny_model_path()
    if shape.name == "tiny":
        return tiny
    out = root / f"{shape.name}-random"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    t = time.perf_counter()
    config = MixtralConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.moe_hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        num_local_experts=shape.experts,
        num_experts_per_tok=shape.top_k,
        max_position_embeddings=131072,
        rope_theta=1e6,
        tie_word_embeddings=False,
        sliding_window=None,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MixtralForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    tmp = root / f".{shape.name}-{os.getpid()}"
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tiny.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, tmp / f.name)
    (tmp / "shape.json").write_text(json.dumps(asdict(shape)))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    try:
        tmp.rename(out)
    except OSError:  # built meanwhile by another process: same seed, same weights
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"built {shape.name}: {shape.total_params() / 1e9:.2f} B params "
        f"({shape.active_params() / 1e9:.2f} B active) in {time.perf_counter() - t:.0f} s",
        flush=True,
    )
    return out


def model_dir(name: str, work: Path, device: str) -> str:
    """The random-weight model of the shape named, built under `work` if not there yet."""
    return str(build(SHAPES[name], Path(work).resolve(), device))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build random-weight models ahead of benchmarks")
    ap.add_argument("models", nargs="+", choices=sorted(SHAPES))
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    for name in a.models:
        print(model_dir(name, a.work, a.device))
