"""The model's own tokenizer, with a vectorised fast path proven equal to it.

Genomic LMs like Genos tokenize one nucleotide per token. For such tokenizers we build a byte ->
id lookup table from the tokenizer itself and check, on probe sequences, that the table gives
exactly the tokenizer's ids (special tokens included); then a whole batch of windows is
tokenized with one numpy gather. Any other tokenizer (k-mers, BPE) runs as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import IUPAC_DNA, ModelConfig
from pipeline.errors import ConfigError, InputError

# Probes exercise every letter next to every other, so a merging tokenizer cannot pass.
_PROBES = (
    "".join(a + b for a in IUPAC_DNA for b in IUPAC_DNA),
    "ACGT" * 16 + "NNNN" + "TTGGCCAA" * 4 + "A",
)


class UnknownToken(InputError):
    """A window holds a character the tokenizer has no token for."""

    def __init__(self, row: int, offset: int, char: str):
        super().__init__(f"the tokenizer has no token for {char!r}")
        self.row, self.offset, self.char = row, offset, char


@dataclass
class TokenizerSpec:
    path: str
    revision: str | None = None
    add_special_tokens: bool = False
    trust_remote_code: bool = False

    @classmethod
    def of_model(cls, model: ModelConfig) -> TokenizerSpec:
        """The tokenizer of `model.*` (its own, or model.tokenizer)."""
        from pipeline.models import resolve_tokenizer_path

        return cls(
            path=resolve_tokenizer_path(model),
            revision=model.revision,
            add_special_tokens=model.add_special_tokens,
            trust_remote_code=model.trust_remote_code,
        )


class DnaTokenizer:
    """The model's tokenizer, and its one-token-per-base table when it has one.

    Loaded once, on the driver: the table travels to the workers with the stage (pickled
    without the tokenizer), so they neither import transformers nor load the tokenizer again.
    A local tokenizer.json is read with the `tokenizers` library itself, which transformers'
    fast tokenizers wrap (about 5 s of transformers imports fewer at every start); special
    tokens, remote code and hub ids go through transformers.
    """

    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        self._hf: Any = None
        self._backend: Any = _local_backend(spec)
        self.lut, self.prefix, self.suffix = self._build_fast_path()

    @property
    def hf(self) -> Any:
        """transformers' tokenizer (loaded on first use)."""
        if self._hf is None:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(
                self.spec.path,
                revision=self.spec.revision,
                trust_remote_code=self.spec.trust_remote_code,
            )
        return self._hf

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # The table is all a char-level worker needs; others load the tokenizer again there.
        state["_hf"] = None
        if self.lut is not None:
            state["_backend"] = None
        return state

    @property
    def char_level(self) -> bool:
        return self.lut is not None

    def token_id(self, base: str) -> int | None:
        """The id of one base's token (char-level tokenizers), or None where it has none."""
        if self.lut is None:
            return None
        i = int(self.lut[ord(base)])
        return i if i >= 0 else None

    @property
    def n_special(self) -> int:
        """Tokens the tokenizer adds around every sequence (char-level tokenizers only)."""
        if self.lut is None:
            return len(self._encode_ref("", self.spec.add_special_tokens))
        return len(self.prefix) + len(self.suffix)

    def max_tokens(self, n_bases: int) -> int:
        """Upper bound of tokens for a window of `n_bases` (exact when char-level)."""
        return n_bases + self.n_special

    def _encode_ref(self, text: str, specials: bool) -> list[int]:
        if self._backend is not None and not specials:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return list(self.hf(text, add_special_tokens=specials)["input_ids"])

    def _unk_id(self) -> int | None:
        if self._backend is None:
            return self.hf.unk_token_id
        unk = getattr(self._backend.model, "unk_token", None)
        return self._backend.token_to_id(unk) if unk else None

    def _build_fast_path(self):
        unk = self._unk_id()
        lut = np.full(256, -1, dtype=np.int64)
        for c in IUPAC_DNA:
            ids = self._encode_ref(c, False)
            if len(ids) == 1 and ids[0] != unk:
                lut[ord(c)] = ids[0]
        if lut[[ord(c) for c in "ACGT"]].min() < 0:
            return None, (), ()
        specials = self.spec.add_special_tokens
        prefix = suffix = None
        for probe in _PROBES:
            probe = "".join(c for c in probe if lut[ord(c)] >= 0)
            plain = lut[np.frombuffer(probe.encode(), dtype=np.uint8)].tolist()
            if self._encode_ref(probe, False) != plain:
                return None, (), ()
            full = self._encode_ref(probe, specials)
            split = _find(full, plain)
            if split is None:
                return None, (), ()
            pre, suf = tuple(full[:split]), tuple(full[split + len(plain) :])
            if prefix is not None and (pre, suf) != (prefix, suffix):
                return None, (), ()
            prefix, suffix = pre, suf
        return lut, prefix, suffix

    def encode(self, sequences: pa.Array) -> pa.ListArray:
        """Token ids (list<int32>) for a string array of uppercase windows."""
        if self.lut is None:
            return self._encode_slow(sequences)
        arr = sequences.combine_chunks() if isinstance(sequences, pa.ChunkedArray) else sequences
        if arr.type != pa.large_string():
            arr = arr.cast(pa.large_string())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)
        offsets = offsets[arr.offset : arr.offset + len(arr) + 1]
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        ids = self.lut[data]
        if ids.size and ids.min() < 0:
            pos = int(np.argmax(ids < 0))
            row = int(np.searchsorted(offsets - offsets[0], pos, side="right")) - 1
            raise UnknownToken(row, pos - int(offsets[row] - offsets[0]), chr(data[pos]))
        ids = ids.astype(np.int32)
        rel = (offsets - offsets[0]).astype(np.int64)
        if not (self.prefix or self.suffix):
            return pa.ListArray.from_arrays(pa.array(rel.astype(np.int32)), pa.array(ids))
        pre = np.asarray(self.prefix, dtype=np.int32)
        suf = np.asarray(self.suffix, dtype=np.int32)
        parts = []
        for i in range(len(rel) - 1):
            parts.extend((pre, ids[rel[i] : rel[i + 1]], suf))
        extra = len(pre) + len(suf)
        new_offsets = rel + extra * np.arange(len(rel))
        values = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)), pa.array(values))

    def _encode_slow(self, sequences: pa.Array) -> pa.ListArray:
        texts = sequences.to_pylist()
        specials = self.spec.add_special_tokens
        if self._backend is not None and not specials:
            enc = [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        else:
            enc = self.hf(texts, add_special_tokens=specials)["input_ids"]
        return pa.array(enc, type=pa.list_(pa.int32()))


def _local_backend(spec: TokenizerSpec) -> Any:
    """The `tokenizers` Tokenizer of a local tokenizer.json, where it alone decides the ids:
    no special tokens asked for (transformers may rewrite the post-processor that adds them),
    no remote code, no hub revision. None: use transformers."""
    path = Path(spec.path) / "tokenizer.json"
    if spec.add_special_tokens or spec.trust_remote_code or spec.revision or not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _find(haystack: list[int], needle: list[int]) -> int | None:
    n = len(needle)
    for i in range(len(haystack) - n + 1):
        if haystack[i : i + n] == needle:
            return i
    return None


def check_window_fits(tokenizer: DnaTokenizer, window_size: int, max_model_len: int) -> None:
    """A window that cannot fit the model is a config error, never a silent truncation."""
    need = tokenizer.max_tokens(window_size)
    if need > max_model_len:
        raise ConfigError(
            f"window.size={window_size} needs up to {need} tokens "
            f"({tokenizer.n_special} special), more than model.max_model_len={max_model_len}; "
            "lower window.size or raise model.max_model_len"
        )


def describe(tokenizer: DnaTokenizer) -> dict[str, Any]:
    return {
        "char_level": tokenizer.char_level,
        "add_special_tokens": tokenizer.spec.add_special_tokens,
        "prefix": list(tokenizer.prefix),
        "suffix": list(tokenizer.suffix),
    }
