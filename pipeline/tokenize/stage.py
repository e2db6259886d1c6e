"""TokenizeStage: windows -> token ids, packed by token budget (CPU workers, off the GPU)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.rows import (
    CHUNK_ID,
    END,
    EXTRA_SEQUENCES,
    N_TOKENS,
    PACK_COLUMNS,
    SEQ_ID,
    SEQUENCE,
    SOURCE,
    START,
    STRAND,
    TOKEN_IDS,
    TOKEN_IDS_ALT,
    TYPES,
    packed,
)
from pipeline.stages import Stage
from pipeline.tokenize.pack import pack
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec, UnknownToken


class TokenizeStage(Stage):
    needs = (CHUNK_ID, SOURCE, SEQ_ID, START, END, STRAND, SEQUENCE)
    # Added to each window (and a token id column per other sequence column it carries),
    # which then travels in a pack: see columns_out.
    adds = (N_TOKENS, TOKEN_IDS)

    def __init__(
        self,
        spec: TokenizerSpec | DnaTokenizer,
        max_model_len: int,
        max_batch_tokens: int,
        tiled: bool = False,
    ):
        # A loaded tokenizer (the driver's) travels as its table: nothing to load here.
        self.tokenizer = spec if isinstance(spec, DnaTokenizer) else None
        self.spec = spec.spec if isinstance(spec, DnaTokenizer) else spec
        self.max_model_len = max_model_len
        # Regions: a window longer than the model takes is tiled by the embed stage.
        self.tiled = tiled
        self.max_batch_tokens = max_batch_tokens

    def setup(self) -> None:
        if self.tokenizer is None:
            self.tokenizer = DnaTokenizer(self.spec)

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        """Packs, which carry the tokenized windows' columns (`packed(name)`)."""
        extra = [c for c in EXTRA_SEQUENCES if c in columns_in]
        windows = (
            *(c for c in columns_in if c != SEQUENCE and c not in extra),
            *self.adds,
            *(EXTRA_SEQUENCES[c] for c in extra),
        )
        return (*PACK_COLUMNS, *(packed(c) for c in windows))

    def tokenize(self, batch: pa.Table) -> pa.Table:
        """Windows with `n_tokens` and `token_ids` instead of `sequence` (and token ids for
        each other sequence column: the reverse complement, the alternate allele's window)."""
        self.ensure_setup()
        self.check_columns(batch)
        ids = self._encode(batch, "sequence")
        n_tokens = pc.list_value_length(ids).cast(TYPES[N_TOKENS])
        out = batch.drop_columns(["sequence"])
        out = out.append_column("n_tokens", n_tokens).append_column("token_ids", ids)
        for column, ids_column in EXTRA_SEQUENCES.items():
            if column in batch.column_names:
                out = out.drop_columns([column]).append_column(
                    ids_column, self._encode(batch, column)
                )
        return out

    def _encode(self, batch: pa.Table, column: str) -> pa.Array:
        try:
            ids = self.tokenizer.encode(batch.column(column).combine_chunks())
        except UnknownToken as e:
            strand = (
                f"strand {batch.column('strand')[e.row].as_py()}"
                if column == "sequence"
                else column.removeprefix("sequence_")
            )
            raise InputError(
                f"{batch.column('source')[e.row].as_py()}: record "
                f"{batch.column('seq_id')[e.row].as_py()!r} has {e.char!r} at window offset "
                f"{e.offset} (window start {batch.column('start')[e.row].as_py()}, {strand}) "
                "and the tokenizer has no token for it; "
                "set input.ambiguity_codes=to_n to map IUPAC codes to N"
            ) from e
        n_tokens = pc.list_value_length(ids).cast(TYPES[N_TOKENS])
        too_long = np.flatnonzero(n_tokens.to_numpy() > self.max_model_len)
        if too_long.size and not self.tiled:
            i = int(too_long[0])
            raise InputError(
                f"window of record {batch.column('seq_id')[i].as_py()!r} at "
                f"{batch.column('start')[i].as_py()} has {n_tokens[i].as_py()} tokens, more than "
                f"model.max_model_len={self.max_model_len}; lower window.size (never truncated)"
            )
        return ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        windows = self.tokenize(batch)
        # The engine's work per row: every sequence it carries.
        cost = windows.column("n_tokens").to_numpy().astype(np.int64)
        for ids_column in EXTRA_SEQUENCES.values():
            if ids_column in windows.column_names:
                cost = cost + pc.list_value_length(windows.column(ids_column)).to_numpy()
        return pack(windows, self.max_batch_tokens, cost, _group_starts(windows))


def _group_starts(windows: pa.Table) -> np.ndarray | None:
    """Variants: rows where a new reference window begins (packs start only there, so
    alleles sharing a window share a pack and the window is embedded once)."""
    if TOKEN_IDS_ALT not in windows.column_names or windows.num_rows == 0:
        return None
    keys = [windows.column(k).to_numpy(zero_copy_only=False) for k in ("seq_id", "start", "end")]
    starts = np.ones(windows.num_rows, dtype=bool)
    starts[1:] = np.logical_or.reduce([k[1:] != k[:-1] for k in keys])
    return starts
