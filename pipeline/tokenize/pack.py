"""Token-budget packs: many windows in one row, so one engine call gets one budget of tokens.

Ray Data batches count rows and merges small blocks; a batch of windows by row count would
overfill the engine with long windows and starve it with short ones. Packing windows into a
single row (a list of structs) makes "one row" mean "one token budget", whatever the lengths.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from pipeline.rows import PACK_COLUMN, PACK_TOKENS, PACK_WINDOWS, TYPES


def pack_bounds(
    n_tokens: np.ndarray, max_tokens: int, starts: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Greedy, order-preserving [lo, hi) row ranges of at most `max_tokens` tokens each.

    A window larger than the budget gets a pack of its own: windows are never split.
    `starts`: where a pack may begin (a group of rows is never split; default: any row).
    """
    bounds = []
    lo = 0
    total = 0
    for i, n in enumerate(n_tokens.tolist()):
        if i > lo and total + n > max_tokens and (starts is None or starts[i]):
            bounds.append((lo, i))
            lo, total = i, 0
        total += n
    if lo < len(n_tokens):
        bounds.append((lo, len(n_tokens)))
    return bounds


def pack(
    table: pa.Table,
    max_tokens: int,
    cost: np.ndarray | None = None,
    starts: np.ndarray | None = None,
) -> pa.Table:
    """Rows of windows -> one row per pack. `cost`: the engine tokens of each window (default:
    its `n_tokens`); `starts`: see pack_bounds."""
    n_tokens = table.column("n_tokens").to_numpy() if cost is None else cost
    bounds = pack_bounds(n_tokens, max_tokens, starts)
    struct = pa.StructArray.from_arrays(
        [table.column(name).combine_chunks() for name in table.column_names],
        names=table.column_names,
    )
    offsets = np.array([lo for lo, _ in bounds] + [len(n_tokens)], dtype=np.int32)
    sums = [int(n_tokens[lo:hi].sum()) for lo, hi in bounds]
    return pa.table(
        {
            PACK_COLUMN: pa.ListArray.from_arrays(pa.array(offsets), struct),
            PACK_WINDOWS: pa.array([hi - lo for lo, hi in bounds], TYPES[PACK_WINDOWS]),
            PACK_TOKENS: pa.array(sums, TYPES[PACK_TOKENS]),
        }
    )


def unpack(batch: pa.Table) -> pa.Table:
    """Packs -> one row per window, in pack order."""
    windows = batch.column(PACK_COLUMN).combine_chunks().flatten()
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(windows)])


def iter_unpacked(batch: pa.Table) -> Iterator[pa.Table]:
    for i in range(batch.num_rows):
        yield unpack(batch.slice(i, 1))
