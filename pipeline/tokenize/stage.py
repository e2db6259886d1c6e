"""TokenizeStage: windows -> token ids, packed by token budget (CPU workers, off the GPU)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.stages import Stage
from pipeline.tokenize.pack import pack
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec, UnknownToken
from pipeline.window.stage import RC_COLUMN

RC_IDS = "token_ids_rc"


class TokenizeStage(Stage):
    needs = ("chunk_id", "source", "seq_id", "start", "end", "strand", "sequence")
    adds = ("n_tokens", "token_ids")

    def __init__(self, spec: TokenizerSpec, max_model_len: int, max_batch_tokens: int):
        self.spec = spec
        self.max_model_len = max_model_len
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer: DnaTokenizer | None = None

    def setup(self) -> None:
        self.tokenizer = DnaTokenizer(self.spec)

    def tokenize(self, batch: pa.Table) -> pa.Table:
        """Windows with `n_tokens` and `token_ids` instead of `sequence` (and, for merged
        strands, `token_ids_rc` instead of `sequence_rc`)."""
        self.ensure_setup()
        self.check_columns(batch)
        ids = self._encode(batch, "sequence")
        n_tokens = pc.list_value_length(ids).cast(pa.int32())
        out = batch.drop_columns(["sequence"])
        out = out.append_column("n_tokens", n_tokens).append_column("token_ids", ids)
        if RC_COLUMN in batch.column_names:
            out = out.drop_columns([RC_COLUMN]).append_column(
                RC_IDS, self._encode(batch, RC_COLUMN)
            )
        return out

    def _encode(self, batch: pa.Table, column: str) -> pa.Array:
        try:
            ids = self.tokenizer.encode(batch.column(column).combine_chunks())
        except UnknownToken as e:
            strand = (
                "reverse complement"
                if column == RC_COLUMN
                else f"strand {batch.column('strand')[e.row].as_py()}"
            )
            raise InputError(
                f"{batch.column('source')[e.row].as_py()}: record "
                f"{batch.column('seq_id')[e.row].as_py()!r} has {e.char!r} at window offset "
                f"{e.offset} (window start {batch.column('start')[e.row].as_py()}, {strand}) "
                "and the tokenizer has no token for it; "
                "set input.ambiguity_codes=to_n to map IUPAC codes to N"
            ) from e
        n_tokens = pc.list_value_length(ids).cast(pa.int32())
        too_long = np.flatnonzero(n_tokens.to_numpy() > self.max_model_len)
        if too_long.size:
            i = int(too_long[0])
            raise InputError(
                f"window of record {batch.column('seq_id')[i].as_py()!r} at "
                f"{batch.column('start')[i].as_py()} has {n_tokens[i].as_py()} tokens, more than "
                f"model.max_model_len={self.max_model_len}; lower window.size (never truncated)"
            )
        return ids

    def __call__(self, batch: pa.Table) -> pa.Table:
        windows = self.tokenize(batch)
        # The engine's work per window: both strands when they are merged.
        cost = windows.column("n_tokens").to_numpy().astype(np.int64)
        if RC_IDS in windows.column_names:
            cost = cost + pc.list_value_length(windows.column(RC_IDS)).to_numpy()
        return pack(windows, self.max_batch_tokens, cost)
