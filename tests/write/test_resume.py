from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from pipeline.errors import OutputError
from pipeline.stages import StatsSink
from pipeline.window.windows import id_array, id_hash
from pipeline.write.layout import SHARDS, OutputDir
from pipeline.write.resume import SkipCommitted, check_exactly_once, scan_committed
from pipeline.write.stage import WriteStage
from tests.write.test_stage import embedded


def hexid(i: int) -> str:
    return hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest()


def test_id_array_and_hash():
    ids = pa.array([hexid(i) for i in (5, 1, 9)])
    arr = id_array(ids)
    assert arr.dtype == np.dtype("S32") and arr.tolist() == [s.encode() for s in ids.to_pylist()]
    assert id_array(ids.slice(1)).tolist() == arr[1:].tolist()
    # order-free, and additive over any split
    assert id_hash(arr) == id_hash(arr[::-1]) == (id_hash(arr[:1]) + id_hash(arr[1:])) % 2**64
    assert id_hash(id_array(pa.array(["f" * 32, "f" * 32]))) == (2 * (2**64 - 1)) % 2**64


def test_scan_keeps_whole_matching_shards_only(tmp_path):
    table = embedded(12)
    write = WriteStage(str(tmp_path), "fp", {})
    a = write(table.slice(0, 4)).to_pylist()[0]
    b = write(table.slice(4, 4)).to_pylist()[0]
    c = write(table.slice(8, 4)).to_pylist()[0]
    WriteStage(str(tmp_path), "other-config", {})(embedded(3, seed=5))
    out = OutputDir(str(tmp_path))
    # b's shard is cut short (a crash that a commit record outlived cannot make, but a hand can)
    path = tmp_path / SHARDS / b["shard"]
    path.write_bytes(path.read_bytes()[:50])
    # a shard written without its commit record (crash between the two) is ignored
    write(table.slice(0, 2))
    (tmp_path / "_commits" / f"{write(table.slice(0, 2)).to_pylist()[0]['shard']}.json").unlink()
    # a commit record still being written by a task that outlived its driver is not one yet
    (tmp_path / "_commits" / f".tmp-0123-{a['shard']}.json").write_text('{"shard": ')
    committed = scan_committed(out, "fp")
    assert sorted(s["shard"] for s in committed.shards) == sorted([a["shard"], c["shard"]])
    want = id_array(
        pa.concat_arrays(
            [table.column("chunk_id").chunk(0)[i] for i in [slice(0, 4), slice(8, 12)]]
        )
    )
    assert committed.ids.tolist() == sorted(want.tolist())
    assert committed.hash == id_hash(want)


def test_overlapping_shards_keep_one(tmp_path):
    table = embedded(6)
    write = WriteStage(str(tmp_path), "fp", {})
    write(table.slice(0, 4))
    write(table.slice(2, 4))  # overlaps rows 2-3
    committed = scan_committed(OutputDir(str(tmp_path)), "fp")
    assert len(committed.shards) == 1 and len(committed.discarded) == 1
    assert committed.rows == 4


def test_skip_committed_filters_and_reports():
    ids = [hexid(i) for i in range(10)]
    done = np.sort(id_array(pa.array(ids[:4])))
    stats = StatsSink()
    out = SkipCommitted(done, stats)(pa.table({"chunk_id": ids[::-1], "x": range(10)}))
    assert out.column("chunk_id").to_pylist() == ids[4:][::-1]
    totals = stats.totals()
    assert totals["windows_resumed"] == 4
    assert totals["windows_resumed_hash"] == id_hash(done)
    empty = SkipCommitted(np.zeros(0, "S32"))(pa.table({"chunk_id": ids}))
    assert empty.num_rows == 10


def commit(ids):
    return {"rows": len(ids), "ids_hash": id_hash(id_array(pa.array(ids)))}


def test_exactly_once_check():
    ids = [hexid(i) for i in range(1, 8)]
    made = {"windows": 7, "windows_hash": id_hash(id_array(pa.array(ids)))}

    class Nothing:
        rows, hash = 0, 0

    check_exactly_once(made, [commit(ids[:3]), commit(ids[3:])], Nothing)
    with pytest.raises(OutputError, match="7 windows were made but 6 written"):
        check_exactly_once(made, [commit(ids[:3]), commit(ids[4:])], Nothing)
    # One window twice and another never: the counts agree, the ids do not.
    with pytest.raises(OutputError, match="ids differ"):
        check_exactly_once(made, [commit(ids[:3]), commit([ids[2], *ids[4:]])], Nothing)

    class Stale:
        rows, hash = 2, id_hash(id_array(pa.array(["a" * 32, "b" * 32])))

    with pytest.raises(OutputError, match="inputs changed"):
        check_exactly_once(made, [commit(ids)], Stale)
