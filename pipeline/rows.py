"""The row contract: every column a stage reads or writes, and its Arrow type, declared once.

The bottom of the house (pyarrow, numpy and the standard library only): the stages, the kinds
of input, the writer, the loaders and the service take column names and types from here.

- Fixed columns: a constant per name (the name in capitals) and its type in `TYPES`; the
  schemas below are lists of those names.
- Computed columns, one set per embedding of a run: named here (`embedding`,
  `emb_l<k>_<pooling>`, `<E>_cosine`, `<E>_l2`, `<E>_ref`, `<E>_alt`, `tokens_l<k>[_ref|_alt]`)
  and typed by the model's hidden size (`vector_type`, `token_states_type`, `SCORE_TYPE`).
- Packed columns: a pack row (`PACK_COLUMN`) carries window rows; `packed(name)` names one of
  their columns (`windows.<name>`), so the wiring check (pipeline/stages.py) sees into packs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# Read: a record of an input file, or part of one.
SOURCE = "source"  # the input file's URI
SEQ_ID = "seq_id"
RECORD_INDEX = "record_index"  # of the record in its file (a piece's row: its first record)
SEQUENCE = "sequence"
# A piece may hold part of a record: where in the record `sequence` starts, and the record's
# whole length (a whole record: 0 and its length).
OFFSET = "offset"
RECORD_LENGTH = "record_length"
# Read: a piece of an indexed FASTA (pipeline/read/pieces.py).
PIECE = "piece"
PIECE_START = "piece_start"
NEXT_RECORD = "next_record"
NEXT_START = "next_start"
PARTS = "parts"
# Read: a BED interval (0-based, half-open; a window's span too).
START = "start"
END = "end"
NAME = "name"
SCORE = "score"
BED_STRAND = "bed_strand"
# Read: a VCF allele.
ALT_INDEX = "alt_index"
POS = "pos"
ID = "id"
REF = "ref"
ALT = "alt"
# Window.
CHUNK_ID = "chunk_id"
STRAND = "strand"
# window.reverse_complement=merge: each '+' row also carries its span's reverse complement,
# so both strands are embedded side by side and merged into that one row.
SEQUENCE_RC = "sequence_rc"
# Variants: the alternate allele's window (and, merged, its reverse complement).
SEQUENCE_ALT = "sequence_alt"
SEQUENCE_ALT_RC = "sequence_alt_rc"
# Regions: what the model sees around the interval, and where the interval lies in the row's
# own sequence (from its 5' end, so mirrored on a '-' row).
WINDOW_START = "window_start"
WINDOW_END = "window_end"
SPAN_START = "span_start"
SPAN_END = "span_end"
# Tokens: of `sequence`, and of each other sequence column.
N_TOKENS = "n_tokens"
TOKEN_IDS = "token_ids"
TOKEN_IDS_RC = "token_ids_rc"
TOKEN_IDS_ALT = "token_ids_alt"
TOKEN_IDS_ALT_RC = "token_ids_alt_rc"
# Sequence columns a row may carry beside `sequence`, and their token id columns.
EXTRA_SEQUENCES = {
    SEQUENCE_RC: TOKEN_IDS_RC,
    SEQUENCE_ALT: TOKEN_IDS_ALT,
    SEQUENCE_ALT_RC: TOKEN_IDS_ALT_RC,
}
# A pack (pipeline/tokenize/pack.py): many windows in one row, a list of structs whose fields
# are the windows' columns (its type follows them); how many windows, and their tokens.
PACK_COLUMN = "windows"
PACK_WINDOWS = "pack_windows"
PACK_TOKENS = "pack_tokens"
# A shard's commit record, and what a write task hands the driver.
SHARD = "shard"
ROWS = "rows"
BYTES = "bytes"
SHA256 = "sha256"
TOKENS = "tokens"
DIM = "dim"
IDS_HASH = "ids_hash"
STORAGE_RETRIES = "storage_retries"

TYPES: dict[str, pa.DataType] = {
    SOURCE: pa.string(),
    SEQ_ID: pa.string(),
    RECORD_INDEX: pa.int64(),
    SEQUENCE: pa.large_string(),
    OFFSET: pa.int64(),
    RECORD_LENGTH: pa.int64(),
    # As Ray infers them from the driver's rows.
    PIECE: pa.int64(),
    PIECE_START: pa.int64(),
    NEXT_RECORD: pa.int64(),
    NEXT_START: pa.int64(),
    PARTS: pa.int64(),
    START: pa.int64(),
    END: pa.int64(),
    NAME: pa.string(),
    SCORE: pa.float64(),
    BED_STRAND: pa.string(),
    ALT_INDEX: pa.int64(),
    POS: pa.int64(),
    ID: pa.string(),
    REF: pa.string(),
    ALT: pa.string(),
    CHUNK_ID: pa.string(),
    STRAND: pa.string(),
    SEQUENCE_RC: pa.large_string(),
    SEQUENCE_ALT: pa.large_string(),
    SEQUENCE_ALT_RC: pa.large_string(),
    WINDOW_START: pa.int64(),
    WINDOW_END: pa.int64(),
    SPAN_START: pa.int64(),
    SPAN_END: pa.int64(),
    N_TOKENS: pa.int32(),
    TOKEN_IDS: pa.list_(pa.int32()),
    TOKEN_IDS_RC: pa.list_(pa.int32()),
    TOKEN_IDS_ALT: pa.list_(pa.int32()),
    TOKEN_IDS_ALT_RC: pa.list_(pa.int32()),
    PACK_WINDOWS: pa.int32(),
    PACK_TOKENS: pa.int64(),
    SHARD: pa.string(),
    ROWS: pa.int64(),
    BYTES: pa.int64(),
    SHA256: pa.string(),
    TOKENS: pa.int64(),
    DIM: pa.int64(),
    IDS_HASH: pa.uint64(),
    STORAGE_RETRIES: pa.int64(),
}


def schema(*names: str) -> pa.Schema:
    """The schema of these columns, in this order."""
    return pa.schema([(n, TYPES[n]) for n in names])


# What the read stages make: records, BED intervals, VCF alleles.
RECORD_SCHEMA = schema(SOURCE, SEQ_ID, RECORD_INDEX, SEQUENCE, OFFSET, RECORD_LENGTH)
INTERVAL_SCHEMA = schema(SOURCE, SEQ_ID, RECORD_INDEX, START, END, NAME, SCORE, BED_STRAND)
ALLELE_SCHEMA = schema(SOURCE, SEQ_ID, RECORD_INDEX, ALT_INDEX, POS, ID, REF, ALT)
# Columns of a piece row; a file read whole has only `source` set (nulls elsewhere).
PIECE_COLUMNS = (PIECE, RECORD_INDEX, PIECE_START, NEXT_RECORD, NEXT_START, PARTS)

# What the window stages make (and, merged strands, with the reverse complements).
WINDOW_SCHEMA = schema(CHUNK_ID, SOURCE, SEQ_ID, START, END, STRAND, SEQUENCE)
MERGE_SCHEMA = schema(*WINDOW_SCHEMA.names, SEQUENCE_RC)
# A region's own columns: the BED interval and the window the model saw around it.
REGION_LOCUS = (
    CHUNK_ID,
    SOURCE,
    SEQ_ID,
    START,
    END,
    STRAND,
    NAME,
    SCORE,
    BED_STRAND,
    WINDOW_START,
    WINDOW_END,
)
REGION_SCHEMA = schema(*REGION_LOCUS, SPAN_START, SPAN_END, SEQUENCE)
REGION_MERGE_SCHEMA = schema(*REGION_SCHEMA.names, SEQUENCE_RC)
VARIANT_SCHEMA = schema(
    CHUNK_ID, SOURCE, SEQ_ID, POS, ID, REF, ALT, START, END, STRAND, SEQUENCE, SEQUENCE_ALT
)
VARIANT_MERGE_SCHEMA = schema(*VARIANT_SCHEMA.names, SEQUENCE_RC, SEQUENCE_ALT_RC)
# Mutagenesis: a variant row's columns, and only the reference window (the engine stage makes
# each alternate from it); ALT null on a position's summary row.
MUTAGENESIS_SCHEMA = schema(
    CHUNK_ID, SOURCE, SEQ_ID, POS, ID, REF, ALT, START, END, STRAND, SEQUENCE
)
MUTAGENESIS_MERGE_SCHEMA = schema(*MUTAGENESIS_SCHEMA.names, SEQUENCE_RC)

# Tracks: a window's scored span on its strand (start, end), the window the model saw, and
# where the span lies in the row's own sequence (from its 5' end).
TRACK_LOCUS = (CHUNK_ID, SOURCE, SEQ_ID, START, END, STRAND, WINDOW_START, WINDOW_END)
TRACK_SCHEMA = schema(*TRACK_LOCUS, SPAN_START, SPAN_END, SEQUENCE)

# What the tokenize stage makes: packs.
PACK_COLUMNS = (PACK_COLUMN, PACK_WINDOWS, PACK_TOKENS)

# What the write stage makes: a shard's commit, and, handed to the driver, with the object
# store's failed requests the write met (retried; pipeline.storage), for the manifest's count.
COMMIT_SCHEMA = schema(SHARD, ROWS, BYTES, SHA256, TOKENS, DIM, IDS_HASH)
WRITE_SCHEMA = schema(*COMMIT_SCHEMA.names, STORAGE_RETRIES)

# A written row: these columns, then the computed ones (one fixed_size_list<float32>[D]
# column per embedding, `embedding` by default; the manifest lists them).
OUTPUT_COLUMNS = (CHUNK_ID, SOURCE, SEQ_ID, START, END, STRAND, N_TOKENS)
REGION_COLUMNS = (*REGION_LOCUS, N_TOKENS)
TRACK_COLUMNS = (*TRACK_LOCUS, N_TOKENS)
# Variants: besides the scores (and kept embeddings).
VARIANT_COLUMNS = (CHUNK_ID, SOURCE, SEQ_ID, POS, ID, REF, ALT, START, END, STRAND, N_TOKENS)

# Rows within a shard, and a sorted load, follow genomic order; the chunk id breaks ties (a
# BED file may list one interval twice, a VCF one allele twice).
SORT_KEYS = [(k, "ascending") for k in (SOURCE, SEQ_ID, START, END, STRAND)]
REGION_ORDER = [*SORT_KEYS, (CHUNK_ID, "ascending")]
VARIANT_ORDER = [(k, "ascending") for k in (SOURCE, SEQ_ID, POS, REF, ALT, STRAND, CHUNK_ID)]


# Computed columns. Embeddings: one per (layer, pooling); variants: per embedding column E,
# the scores E_<metric> and, kept, E_<allele>; embed.per_token: tokens_l<k>[_<allele>].
POOLINGS = ("mean", "max", "last")
# The one column every earlier run wrote: the last layer, mean-pooled.
DEFAULT_COLUMN = "embedding"
METRICS = ("cosine", "l2")
ALLELES = ("ref", "alt")
SCORE_TYPE = pa.float64()


def vector_type(hidden_size: int) -> pa.DataType:
    """An embedding: fixed_size_list<float32>[hidden]."""
    return pa.list_(pa.float32(), hidden_size)


def token_states_type(hidden_size: int) -> pa.DataType:
    """A row's per-token states: large_list<fixed_size_list<float16>[hidden]>."""
    return pa.large_list(pa.list_(pa.float16(), hidden_size))


def column_name(layer: int, pooling: str, num_layers: int) -> str:
    """`embedding` for the last layer mean-pooled (today's column), else `emb_l<k>_<pooling>`."""
    if layer == num_layers and pooling == "mean":
        return DEFAULT_COLUMN
    return f"emb_l{layer}_{pooling}"


def parse_column(name: str) -> tuple[int | None, str]:
    """(layer, pooling) from a column name; the layer of `embedding` is the model's last."""
    if name == DEFAULT_COLUMN:
        return None, "mean"
    head, _, pooling = name.rpartition("_")
    if not head.startswith("emb_l") or not head[5:].isdigit() or pooling not in POOLINGS:
        raise ValueError(f"{name!r} is not a dnaembed embedding column")
    return int(head[5:]), pooling


def suffixed(column: str, what: str) -> str:
    """A variant column of embedding column `column`: `E_cosine`, `E_l2`, `E_ref`, `E_alt`."""
    return f"{column}_{what}"


def tokens_column(layer: int, suffix: str = "") -> str:
    """The per-token column of a layer: `tokens_l<k>` (variants: `..._ref`, `..._alt`)."""
    return f"tokens_l{layer}{suffix}"


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, D] vectors as an embedding column (vector_type(D))."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def token_states_array(rows: Sequence[np.ndarray]) -> pa.LargeListArray:
    """Per-row [tokens, hidden] arrays as a per-token column (token_states_type(hidden))."""
    d = rows[0].shape[1] if len(rows) else 0
    values = np.concatenate(rows).astype(np.float16) if len(rows) else np.zeros((0, d), np.float16)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d)
    return pa.LargeListArray.from_arrays(pa.array(offsets), inner)


def packed(name: str) -> str:
    """A column of the windows a pack carries, as the wiring check names it: `windows.<name>`."""
    return f"{PACK_COLUMN}.{name}"


def unpacked(columns: Sequence[str]) -> tuple[str, ...]:
    """The columns of the windows that the packs among `columns` carry, by their own names."""
    prefix = packed("")
    return tuple(c.removeprefix(prefix) for c in columns if c.startswith(prefix))
