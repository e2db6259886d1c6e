"""The kinds of input as objects: found in their package, each complete, decided from the
config alone; what is written follows each kind's own declarations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.compose import compose, to_config
from pipeline.config import InputConfig
from pipeline.embed.outputs import embedding_columns
from pipeline.errors import ConfigError
from pipeline.kinds import KINDS, Kind, get, kind_of
from pipeline.rows import N_TOKENS
from pipeline.write.layout import row_order

BASE = ["output=o", "model=tiny"]
SELECT = {
    "tiles": ["input=x.fa"],
    "regions": ["input.reference=ref.fa", "input.regions=peaks.bed"],
    "variants": ["input.reference=ref.fa", "input.variants=calls.vcf.gz"],
    "tracks": ["input.tracks=genome.fa.gz"],
}


def test_every_module_of_the_package_is_a_kind_with_its_own_input_key():
    assert sorted(KINDS) == ["mutagenesis", "regions", "tiles", "tracks", "variants"]
    keys = [k.key for k in KINDS.values()]
    assert len(set(keys)) == len(keys)
    fields = InputConfig.__dataclass_fields__
    for kind in KINDS.values():
        assert kind.key in fields, kind.name  # selected by a key users can set
        for attr in ("usage", "row_columns", "window_schema", "row_order", "coordinates"):
            assert getattr(kind, attr), (kind.name, attr)
        # Its written columns come from its window rows (and the token count).
        have = {*kind.window_schema.names, N_TOKENS}
        assert set(kind.row_columns) <= have, kind.name
        assert {k for k, _ in kind.row_order} <= set(kind.row_columns), kind.name
    with pytest.raises(ConfigError, match="unknown kind of input 'genes'"):
        get("genes")


@pytest.mark.parametrize("name", sorted(SELECT))
def test_the_config_decides_the_kind_and_the_manifest_its_order(name):
    cfg = to_config(compose([*BASE, *SELECT[name]]))
    kind = kind_of(cfg)
    assert isinstance(kind, Kind) and kind.name == name
    assert row_order({"input": name}) == kind.row_order


@pytest.mark.parametrize("name", sorted(set(SELECT) - {"tracks"}))
def test_written_rows_have_the_declared_schema(name):
    """What `written` builds from the core's columns is the schema the kind declares with no
    row at hand (what an empty run writes)."""
    cfg = to_config(compose([*BASE, *SELECT[name], "embed.layers=[1,2]"]))
    kind = kind_of(cfg)
    columns = embedding_columns([1, 2], ["mean"], num_layers=2)
    hidden, n = 8, 3
    schema = kind.schema(columns, (), hidden)
    rows = pa.table({c: pa.array([None] * n, schema.field(c).type) for c in kind.row_columns})
    rng = np.random.default_rng(0)
    vectors = {
        role: {c.column: rng.standard_normal((n, hidden)).astype(np.float32) for c in columns}
        for role in kind.roles
    }
    out = kind.written(rows, columns, vectors, {})
    assert out.schema == schema


def test_written_tracks_rows_have_the_declared_schema():
    from pipeline.embed.core import TokenScores

    cfg = to_config(compose([*BASE, *SELECT["tracks"], "tracks.values=[logp,probs,entropy]"]))
    kind = kind_of(cfg)
    schema = kind.schema([], (), 8)
    n, m = 3, 5
    base = {"start": [0, 10, 20], "end": [m, 10 + m, 20 + m], "strand": ["+", "-", "+"]}
    rows = pa.table(
        {c: pa.array(base.get(c, [None] * n), schema.field(c).type) for c in kind.row_columns}
    )
    rng = np.random.default_rng(0)
    scores = [
        [TokenScores(1, rng.normal(size=m), rng.normal(size=m), rng.normal(size=(m, 5)), base=b)]
        for b in (np.array([0, 1, 2, 3, 4]),) * n
    ]
    out = kind.written(rows, [], {}, {}, {"": scores})
    assert out.schema == schema
    # N (place 4 in the alphabet) is a gap; probabilities sum to one elsewhere.
    probs = np.asarray(out.column("probs")[0].as_py())
    assert np.isnan(probs[4]).all() and np.allclose(probs[:4].sum(axis=1), 1)
