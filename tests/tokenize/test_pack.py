from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from pipeline.tokenize.pack import pack, pack_bounds, unpack


@given(st.lists(st.integers(1, 500), max_size=60), st.integers(1, 1000))
def test_pack_bounds(n_tokens, budget):
    bounds = pack_bounds(np.array(n_tokens, dtype=np.int64), budget)
    # Contiguous, complete, in order.
    flat = [i for lo, hi in bounds for i in range(lo, hi)]
    assert flat == list(range(len(n_tokens)))
    for lo, hi in bounds:
        total = sum(n_tokens[lo:hi])
        assert hi > lo
        assert total <= budget or hi - lo == 1  # only a lone oversized window exceeds it
        if hi < len(n_tokens):  # greedy: the next window would not have fitted
            assert total + n_tokens[hi] > budget


def test_pack_roundtrip():
    table = pa.table(
        {
            "chunk_id": ["a", "b", "c", "d"],
            "n_tokens": pa.array([3, 2, 4, 1], pa.int32()),
            "token_ids": pa.array([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], pa.list_(pa.int32())),
        }
    )
    packed = pack(table, max_tokens=5)
    assert packed.column("pack_windows").to_pylist() == [2, 2]
    assert packed.column("pack_tokens").to_pylist() == [5, 5]
    assert unpack(packed).to_pylist() == table.to_pylist()
    assert unpack(packed.slice(1, 1)).column("chunk_id").to_pylist() == ["c", "d"]


@given(st.lists(st.integers(1, 300), min_size=1, max_size=60), st.integers(1, 1000), st.data())
def test_packs_start_only_where_a_group_does(n_tokens, budget, data):
    starts = np.array(
        data.draw(st.lists(st.booleans(), min_size=len(n_tokens), max_size=len(n_tokens)))
    )
    starts[0] = True
    bounds = pack_bounds(np.array(n_tokens, dtype=np.int64), budget, starts)
    assert [i for lo, hi in bounds for i in range(lo, hi)] == list(range(len(n_tokens)))
    assert all(starts[lo] for lo, _ in bounds)  # a group (e.g. one reference window) never splits
