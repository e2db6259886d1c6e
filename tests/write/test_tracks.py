"""bigWig assembly from track shards: real Parquet shards in, real bigWigs read back."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyBigWig
import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.write.tracks import BASES, bigwig_tracks, write_bigwigs

# Header order is input order, not sorted; chrM has no rows at all.
CONTIGS = [("chr2", 10_000), ("chr1", 3_000), ("chrM", 500)]
VALUES = ["logp", "entropy", "probs"]
BLOCK = 1000
SOURCE = "/data/genome.fa"


@dataclass
class Synthetic:
    """Track rows and the per-base truth they encode: truth[(contig, strand)][value]."""

    rows: list[dict] = field(default_factory=list)
    truth: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    def expected(self, contig: str, strand: str, track: str) -> np.ndarray:
        """Per-base truth of a bigWig: strand forward, reverse or merged."""
        if strand == "merged":
            both = np.stack([self.expected(contig, s, track) for s in ("forward", "reverse")])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                return np.nanmean(both, axis=0).astype(np.float32)
        row_strand = {"forward": "+", "reverse": "-"}[strand]
        length = dict(CONTIGS)[contig]
        arrays = self.truth.get((contig, row_strand))
        if arrays is None:
            return np.full(length, np.nan, np.float32)
        if track.startswith("prob_"):
            return arrays["probs"][:, BASES.index(track[-1])]
        return arrays[track]


def synthetic(seed: int = 0) -> Synthetic:
    """Rows of 500-900 bases tiling chr2 and chr1 on both strands, with uncovered stretches
    between some rows and NaN gaps inside them."""
    rng = np.random.default_rng(seed)
    data = Synthetic()
    for contig, length in CONTIGS[:2]:
        for strand in "+-":
            truth = {
                "logp": np.full(length, np.nan, np.float32),
                "entropy": np.full(length, np.nan, np.float32),
                "probs": np.full((length, 4), np.nan, np.float32),
            }
            data.truth[(contig, strand)] = truth
            pos = int(rng.integers(0, 50))
            while pos < length:
                end = min(pos + int(rng.integers(500, 900)), length)
                data.rows.append(_row(rng, contig, strand, pos, end, truth))
                pos = end + (int(rng.integers(1, 40)) if rng.random() < 0.3 else 0)
    return data


def _row(rng, contig: str, strand: str, start: int, end: int, truth: dict) -> dict:
    n = end - start
    logp = rng.normal(-1.3, 0.5, n).astype(np.float32)
    entropy = rng.uniform(0, 1.4, n).astype(np.float32)
    probs = rng.dirichlet(np.ones(4), n).astype(np.float32)
    for _ in range(2):  # N runs: no value on any track
        a = int(rng.integers(0, n))
        b = min(n, a + int(rng.integers(1, 30)))
        logp[a:b] = entropy[a:b] = probs[a:b] = np.nan
    truth["logp"][start:end] = logp
    truth["entropy"][start:end] = entropy
    truth["probs"][start:end] = probs
    window_start = max(0, start - 100)
    return {
        "chunk_id": f"{contig}:{start}{strand}",
        "source": SOURCE,
        "seq_id": contig,
        "start": start,
        "end": end,
        "strand": strand,
        "window_start": window_start,
        "window_end": end,
        "n_tokens": end - window_start,
        "logp": logp,
        "entropy": entropy,
        "probs": probs,
    }


def track_table(rows: list[dict]) -> pa.Table:
    """Rows in the tracks schema, sorted as a shard's are."""
    rows = sorted(rows, key=lambda r: (r["source"], r["seq_id"], r["start"], r["end"], r["strand"]))
    offsets = pa.array(np.cumsum([0, *(len(r["logp"]) for r in rows)]), pa.int64())

    def listed(name: str) -> pa.Array:
        flat = np.concatenate([r[name] for r in rows]) if rows else np.zeros(0, np.float32)
        return pa.LargeListArray.from_arrays(offsets, pa.array(flat.reshape(-1), pa.float32()))

    flat = np.concatenate([r["probs"] for r in rows]).reshape(-1)
    probs = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 4)
    columns = {
        "chunk_id": pa.array([r["chunk_id"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "seq_id": pa.array([r["seq_id"] for r in rows], pa.string()),
        **{k: pa.array([r[k] for r in rows], pa.int64()) for k in ("start", "end")},
        "strand": pa.array([r["strand"] for r in rows], pa.string()),
        **{k: pa.array([r[k] for r in rows], pa.int64()) for k in ("window_start", "window_end")},
        "n_tokens": pa.array([r["n_tokens"] for r in rows], pa.int32()),
        "logp": listed("logp"),
        "entropy": listed("entropy"),
        "probs": pa.LargeListArray.from_arrays(offsets, probs),
    }
    return pa.table(columns)


def write_shards(directory: Path, rows: list[dict], n: int = 3, seed: int = 0) -> list[str]:
    """Rows spread at random over `n` shards under `directory`/shards; one shard has small row
    groups. Returns the shard paths."""
    rng = np.random.default_rng(seed)
    which = rng.permutation(len(rows)) % n
    (directory / "shards").mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = str(directory / "shards" / f"part-{k:05d}.parquet")
        table = track_table([r for r, w in zip(rows, which, strict=True) if w == k])
        pq.write_table(table, path, row_group_size=4 if k == 1 else None)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return synthetic()


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory) -> list[str]:
    paths = write_shards(tmp_path_factory.mktemp("run"), data.rows)
    return [paths[2], paths[0], paths[1]]


def read_all(path: str) -> dict[str, np.ndarray]:
    """Every base of every contig of a bigWig (NaN where it has no data)."""
    bw = pyBigWig.open(path)
    try:
        assert bw.chroms() == dict(CONTIGS)
        return {
            c: np.asarray(bw.values(c, 0, n, numpy=True), np.float32)
            if bw.header()["nBasesCovered"]
            else np.full(n, np.nan, np.float32)
            for c, n in CONTIGS
        }
    finally:
        bw.close()


def test_bigwig_tracks_lists_values_then_strands():
    assert bigwig_tracks(["probs", "logp"], "both") == [
        *(
            (f"tracks/prob_{b}.{s}.bw", f"prob_{b}", s, i)
            for i, b in enumerate("ACGT")
            for s in ("forward", "reverse")
        ),
        ("tracks/logp.forward.bw", "logp", "forward", None),
        ("tracks/logp.reverse.bw", "logp", "reverse", None),
    ]
    assert bigwig_tracks(["entropy"], "merged") == [
        ("tracks/entropy.merged.bw", "entropy", "merged", None)
    ]
    assert [t[2] for t in bigwig_tracks(["logp"], "reverse")] == ["reverse"]
    with pytest.raises(ConfigError, match="logq"):
        bigwig_tracks(["logq"], "both")
    with pytest.raises(ConfigError, match="sideways"):
        bigwig_tracks(["logp"], "sideways")


@pytest.mark.parametrize("strands", ["both", "forward", "reverse", "merged"])
def test_every_value_reads_back(data, shards, tmp_path, strands):
    entries = write_bigwigs(shards, CONTIGS, VALUES, strands, str(tmp_path), block_bases=BLOCK)
    expected = bigwig_tracks(VALUES, strands)
    assert [(e["path"], e["track"], e["strand"]) for e in entries] == [t[:3] for t in expected]
    # Exactly the run's files, no staging copies left beside them.
    assert sorted(os.listdir(tmp_path / "tracks")) == sorted(
        os.path.basename(e["path"]) for e in entries
    )
    for e in entries:
        got = read_all(str(tmp_path / e["path"]))
        bases = 0
        for contig, _ in CONTIGS:
            want = data.expected(contig, e["strand"], e["track"])
            np.testing.assert_array_equal(got[contig], want, err_msg=f"{e['path']} {contig}")
            bases += int(np.count_nonzero(~np.isnan(want)))
        assert e["bases"] == bases > 0


def test_merged_is_the_mean_of_the_strands_with_a_value(data, shards, tmp_path):
    write_bigwigs(shards, CONTIGS, ["logp"], "merged", str(tmp_path), block_bases=BLOCK)
    got = read_all(str(tmp_path / "tracks" / "logp.merged.bw"))["chr2"]
    fwd, rev = (data.truth[("chr2", s)]["logp"] for s in "+-")
    both = ~np.isnan(fwd) & ~np.isnan(rev)
    only_fwd, only_rev = ~np.isnan(fwd) & np.isnan(rev), np.isnan(fwd) & ~np.isnan(rev)
    assert both.any() and only_fwd.any() and only_rev.any()  # every case is exercised
    np.testing.assert_array_equal(got[both], ((fwd + rev) / 2)[both])
    np.testing.assert_array_equal(got[only_fwd], fwd[only_fwd])
    np.testing.assert_array_equal(got[only_rev], rev[only_rev])
    assert np.isnan(got[np.isnan(fwd) & np.isnan(rev)]).all()


def test_a_strand_without_rows_makes_a_file_of_its_header_alone(data, tmp_path):
    forward = [r for r in data.rows if r["strand"] == "+"]
    shards = write_shards(tmp_path / "run", forward)
    entries = write_bigwigs(shards, CONTIGS, ["logp"], "reverse", str(tmp_path), block_bases=BLOCK)
    assert entries == [
        {"path": "tracks/logp.reverse.bw", "track": "logp", "strand": "reverse", "bases": 0}
    ]
    assert all(np.isnan(v).all() for v in read_all(str(tmp_path / entries[0]["path"])).values())


def test_shards_in_any_order_give_the_same_bytes(data, shards, tmp_path):
    first = write_bigwigs(shards, CONTIGS, VALUES, "both", str(tmp_path / "a"), block_bases=BLOCK)
    second = write_bigwigs(
        shards[::-1], CONTIGS, VALUES, "both", str(tmp_path / "b"), block_bases=BLOCK
    )
    assert first == second
    for e in first:
        assert (tmp_path / "a" / e["path"]).read_bytes() == (
            tmp_path / "b" / e["path"]
        ).read_bytes(), e["path"]


def test_the_block_size_changes_no_value(data, shards, tmp_path):
    small = write_bigwigs(shards, CONTIGS, ["probs"], "both", str(tmp_path / "s"), block_bases=97)
    large = write_bigwigs(shards, CONTIGS, ["probs"], "both", str(tmp_path / "l"))
    assert small == large
    for e in small:
        a, b = read_all(str(tmp_path / "s" / e["path"])), read_all(str(tmp_path / "l" / e["path"]))
        for contig, _ in CONTIGS:
            np.testing.assert_array_equal(a[contig], b[contig])


def _bad_shard(tmp_path: Path, data: Synthetic, change) -> str:
    """A fourth shard holding one row derived from an existing one by `change`."""
    rng = np.random.default_rng(5)
    row = dict(data.rows[3])
    change(row, rng)
    path = str(tmp_path / "part-bad.parquet")
    pq.write_table(track_table([row]), path)
    return path


def _overlap(row, rng):
    row["start"] += 1
    row["end"] += 1


def _length(row, rng):
    # chrM has no other row: only the length is wrong.
    row["seq_id"] = "chrM"
    for name in ("logp", "entropy", "probs"):
        row[name] = row[name][:100]
    row["start"], row["end"] = 0, 101


def _contig(row, rng):
    row["seq_id"] = "chrX"


def _strand(row, rng):
    row["strand"] = "."


def _past_end(row, rng):
    row["seq_id"] = "chr1"
    row["start"], row["end"] = 3_000 - 10, 3_000 - 10 + len(row["logp"])


@pytest.mark.parametrize(
    "change, message",
    [
        (_overlap, r"rows overlap on chr2 .*part-bad\.parquet row 0"),
        (_length, r"part-bad\.parquet row 0: logp has \d+ values for a span of \d+ bases"),
        (_contig, r"part-bad\.parquet row 0: contig 'chrX' is not in the input"),
        (_strand, r"part-bad\.parquet row 0: strand '\.' is neither \+ nor -"),
        (
            _past_end,
            r"part-bad\.parquet row 0: chr1:2990-\d+ is not a span of chr1 \(length 3000\)",
        ),
    ],
)
def test_bad_rows_are_refused_naming_shard_and_row(data, shards, tmp_path, change, message):
    bad = _bad_shard(tmp_path, data, change)
    dest = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        write_bigwigs([*shards, bad], CONTIGS, VALUES, "both", str(dest), block_bases=BLOCK)
    assert not (dest / "tracks").exists() or os.listdir(dest / "tracks") == []


def test_an_upload_to_an_object_store(data, shards, tmp_path, s3, s3_endpoint):
    options = {"s3": {"endpoint_url": s3_endpoint}}
    dest = f"s3://out-{s3.name}/run"
    entries = write_bigwigs(shards, CONTIGS, ["logp"], "both", dest, options, block_bases=BLOCK)
    local = write_bigwigs(shards, CONTIGS, ["logp"], "both", str(tmp_path), block_bases=BLOCK)
    assert entries == local
    s3.invalidate_cache()
    for e in entries:
        assert s3.cat_file(f"out-{s3.name}/run/{e['path']}") == (tmp_path / e["path"]).read_bytes()
