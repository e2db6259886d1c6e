"""The row contract: one name and one type per column."""

from __future__ import annotations

import numpy as np

from pipeline import rows


def test_every_column_constant_is_its_name_and_has_a_type():
    names = {k: v for k, v in vars(rows).items() if k.isupper() and isinstance(v, str)}
    computed = {"PACK_COLUMN", "DEFAULT_COLUMN"}  # typed by what they hold
    for constant, name in names.items():
        if constant not in computed:
            assert name == constant.lower(), constant
            assert name in rows.TYPES, name
    assert set(rows.TYPES) == {v for k, v in names.items() if k not in computed}


def test_computed_columns_are_built_with_their_declared_types():
    vectors = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert rows.embedding_array(vectors).type == rows.vector_type(4)
    states = rows.token_states_array([np.ones((2, 4)), np.zeros((5, 4))])
    assert states.type == rows.token_states_type(4)
    assert [len(r) for r in states.to_pylist()] == [2, 5]
    assert rows.packed("token_ids") == "windows.token_ids"
    assert rows.unpacked(("windows", "windows.n_tokens", "chunk_id")) == ("n_tokens",)
