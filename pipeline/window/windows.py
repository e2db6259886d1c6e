"""Window arithmetic: spans, strands and chunk ids. Pure functions, no Ray.

Coordinates are 0-based, half-open ([start, end)), on the forward strand, as in BED. A `-`
strand window has the same coordinates as its forward twin and the reverse complement as its
sequence.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

_COMPLEMENT = str.maketrans("ACGTRYKMSWBDHVN", "TGCAYRMKSWVHDBN")


def spans(length: int, size: int, stride: int, last: str = "keep") -> list[tuple[int, int]]:
    """[start, end) windows over a sequence of `length` bases.

    Windows start at 0, stride, 2*stride, ... until one reaches the end. With stride <= size
    every base is covered. The final window, when shorter than `size`, follows `last`:
    keep it short, shift it left to end at `length` (full size), or drop it.
    """
    if length <= 0:
        return []
    out = []
    start = 0
    while True:
        end = min(start + size, length)
        out.append((start, end))
        if end == length:
            break
        start += stride
    s, e = out[-1]
    if e - s < size:
        if last == "drop":
            out.pop()
        elif last == "shift":
            out[-1] = (max(0, length - size), length)
    return out


def reverse_complement(seq: str) -> str:
    return seq[::-1].translate(_COMPLEMENT)


def chunk_id(source: str, seq_id: str, start: int, end: int, strand: str, model_key: str) -> str:
    """Deterministic id of one window's embedding: input, record, span, strand and model."""
    key = "\x1f".join((source, seq_id, str(start), str(end), strand, model_key))
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


MASK = (1 << 64) - 1
ID_LEN = 32


def id_array(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Chunk ids as a numpy S32 array (zero-copy when the Arrow buffers allow)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if len(ids) == 0:
        return np.zeros(0, dtype=f"S{ID_LEN}")
    if ids.type == pa.string() and ids.null_count == 0:
        offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[
            ids.offset : ids.offset + len(ids) + 1
        ]
        if offsets[-1] - offsets[0] == ID_LEN * len(ids) and (np.diff(offsets) == ID_LEN).all():
            data = ids.buffers()[2]
            return np.frombuffer(data, dtype=f"S{ID_LEN}", count=len(ids), offset=int(offsets[0]))
    return np.array(ids.to_pylist(), dtype=f"S{ID_LEN}")


def id_hash(ids: np.ndarray) -> int:
    """Sum mod 2^64 of the ids' first 64 bits: order-free, so any grouping agrees."""
    if ids.size == 0:
        return 0
    raw = np.frombuffer(bytes.fromhex(ids.tobytes().decode()), dtype=">u8").reshape(-1, 2)
    return int(raw[:, 0].astype(np.uint64).sum(dtype=np.uint64))


def row_id(*parts: object) -> str:
    """Deterministic id of one output row from its identifying parts (regions, variants)."""
    key = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def flanked(start: int, end: int, flank: int, contig_length: int) -> tuple[int, int]:
    """The window a region is embedded in: [start, end) +- flank, clipped to the contig."""
    return max(0, start - flank), min(contig_length, end + flank)


def mirror(span: tuple[int, int], length: int) -> tuple[int, int]:
    """A [a, b) range of a sequence of `length`, in its reverse complement."""
    a, b = span
    return length - b, length - a


def variant_window(
    pos: int, size: int, contig_length: int, before: int | None = None
) -> tuple[int, int]:
    """The reference window of a variant at 1-based `pos`: it starts `before` bases (default
    size // 2: centred) before the variant's first base, shifted to lie inside the contig,
    and is `size` long (or the whole contig, when shorter)."""
    pos0 = pos - 1
    before = size // 2 if before is None else before
    start = min(max(0, pos0 - before), max(0, contig_length - size))
    return start, min(start + size, contig_length)


def alt_window_sequence(
    fetch, start: int, pos: int, ref: str, alt: str, size: int, contig_length: int
) -> str:
    """The alternate window: the reference window's start, REF replaced by ALT, filled from
    the contig (or cut) at its far end to `size` bases. `fetch(a, b)` reads the contig."""
    pos0 = pos - 1
    after = pos0 + len(ref)
    need = size - (pos0 - start) - len(alt)
    tail = fetch(after, min(contig_length, after + need)) if need > 0 else ""
    return (fetch(start, pos0) + alt + tail)[:size]
