from __future__ import annotations

import pytest

from pipeline.errors import OutputError
from pipeline.write.layout import MANIFEST, RUN, OutputDir
from pipeline.write.manifest import build_manifest, claim_output, differing_keys

FIELDS = {"window": {"size": 10, "stride": 10}, "model": {"name": "tiny"}}


def test_claim_new_then_refuse_other_config(tmp_path):
    out = OutputDir(str(tmp_path / "o"))
    assert claim_output(out, "fp1", FIELDS, "error") is None
    assert out.exists(RUN)
    assert claim_output(out, "fp1", FIELDS, "error") is None  # same config: ours
    # Once it has committed a shard, the run is one to keep.
    out.write_json({"shard": "part-1.parquet"}, "_commits", "part-1.parquet.json")
    other = {"window": {"size": 20, "stride": 10}, "model": {"name": "tiny"}}
    with pytest.raises(OutputError, match=r"different config \(differs in: window.size\)"):
        claim_output(out, "fp2", other, "error")
    assert claim_output(out, "fp2", other, "overwrite") is None
    assert out.read_json(RUN)["fingerprint"] == "fp2"


def test_complete_output_is_returned(tmp_path):
    out = OutputDir(str(tmp_path))
    out.write_json({"fingerprint": "fp", "fingerprint_fields": FIELDS, "counts": {}}, MANIFEST)
    assert claim_output(out, "fp", FIELDS, "error")["fingerprint"] == "fp"


def test_differing_keys_are_flattened():
    assert differing_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == ["a.c", "d"]


def commit(name, rows, dim=4):
    return {"shard": name, "rows": rows, "bytes": 10, "sha256": "x", "tokens": rows * 5, "dim": dim}


EMBEDDINGS = [{"column": "embedding", "layer": 2, "pooling": "mean"}]


def test_manifest_counts_and_accounting():
    stats = {
        "records": 5,
        "bases": 500,
        "windows": 7,
        "inputs": [{"uri": "a"}],
        "skipped": [{"source": "a", "seq_id": "e", "reason": "empty sequence"}],
    }
    m = build_manifest(
        fingerprint="fp",
        fields=FIELDS,
        model={"name": "tiny"},
        commits=[commit("b", 3), commit("a", 4)],
        stats=stats,
        elapsed_s=1.0,
        embeddings=EMBEDDINGS,
        strands="forward",
    )
    assert [s["path"] for s in m["shards"]] == ["shards/a", "shards/b"]
    c = m["counts"]
    assert (c["records"], c["records_skipped"], c["records_embedded"]) == (5, 1, 4)
    assert (c["windows"], c["tokens"]) == (7, 35)
    assert m["dim"] == 4 and m["embeddings"] == EMBEDDINGS and m["strands"] == "forward"


def test_manifest_refuses_inconsistent_commits():
    kw = dict(
        fingerprint="fp",
        fields=FIELDS,
        model={},
        stats={},
        elapsed_s=0,
        embeddings=EMBEDDINGS,
        strands="forward",
    )
    with pytest.raises(OutputError, match="same shard"):
        build_manifest(commits=[commit("a", 1), commit("a", 1)], **kw)
    with pytest.raises(OutputError, match="dimension"):
        build_manifest(commits=[commit("a", 1, 4), commit("b", 1, 8)], **kw)
