"""load_track on a tracks output laid out as a run leaves it: shards/, _manifest.json, tracks/."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.errors import OutputError
from pipeline.load.tracks import load_track
from pipeline.write.layout import FORMAT, MANIFEST
from pipeline.write.tracks import TRACK_SOURCES, write_bigwigs
from tests.write.test_tracks import BLOCK, CONTIGS, VALUES, Synthetic, synthetic, write_shards

TRACKS = list(TRACK_SOURCES)
STRANDS = ["forward", "reverse", "merged"]


def write_manifest(run: Path, strands: str = "both", contigs: bool = True) -> None:
    """The manifest's parts the loader reads: shards as the writer lists them, the strands
    scored and the contig lengths."""
    shards = []
    for path in sorted((run / "shards").glob("part-*.parquet")):
        data = path.read_bytes()
        shards.append(
            {
                "path": f"shards/{path.name}",
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    tracks: dict = {"values": VALUES, "strands": strands}
    if contigs:
        tracks["contigs"] = [list(c) for c in CONTIGS]
    manifest = {"format": FORMAT, "input": "tracks", "shards": shards, "tracks": tracks}
    (run / MANIFEST).write_text(json.dumps(manifest, indent=2))


def make_run(run: Path, data: Synthetic, strands: tuple[str, ...] = ("both", "merged")) -> str:
    """Shards, bigWigs of each `strands` setting, and the manifest."""
    shards = write_shards(run, data.rows)
    for setting in strands:
        write_bigwigs(shards, CONTIGS, VALUES, setting, str(run), block_bases=BLOCK)
    write_manifest(run)
    return str(run)


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return synthetic(seed=3)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> str:
    return make_run(tmp_path_factory.mktemp("run"), data)


@pytest.mark.parametrize("strand", STRANDS)
@pytest.mark.parametrize("track", TRACKS)
def test_bigwig_and_parquet_give_the_same_values(data, run, track, strand):
    # Ranges across rows, gaps between rows and block edges; chrM has no rows at all.
    for contig, start, end in [("chr2", 1234, 5678), ("chr1", 0, 3000), ("chrM", 7, 500)]:
        want = data.expected(contig, strand, track)[start:end]
        from_bw = load_track(run, track, contig, start, end, strand, source="bigwig")
        from_pq = load_track(run, track, contig, start, end, strand, source="parquet")
        assert from_bw.dtype == from_pq.dtype == np.float32
        np.testing.assert_array_equal(from_bw, want, err_msg=f"bigwig {contig}")
        np.testing.assert_array_equal(from_pq, want, err_msg=f"parquet {contig}")


def test_auto_reads_the_bigwig_and_else_the_shards(data, tmp_path):
    run = make_run(tmp_path, data, strands=("forward",))
    want = data.expected("chr2", "reverse", "logp")[100:2100]
    # No reverse bigWig: auto falls back to the shards.
    np.testing.assert_array_equal(load_track(run, "logp", "chr2", 100, 2100, "reverse"), want)
    with pytest.raises(ValueError, match=r"no bigWig tracks/logp\.reverse\.bw"):
        load_track(run, "logp", "chr2", 100, 2100, "reverse", source="bigwig")
    # A bigWig is what auto reads where there is one (here, one that differs from the shards).
    forward = tmp_path / "tracks" / "logp.forward.bw"
    forward.write_bytes((tmp_path / "tracks" / "entropy.forward.bw").read_bytes())
    got = load_track(run, "logp", "chr2", 100, 2100)
    np.testing.assert_array_equal(got, data.expected("chr2", "forward", "entropy")[100:2100])


def test_an_empty_range(run):
    for source in ("bigwig", "parquet"):
        got = load_track(run, "entropy", "chr1", 3000, 3000, source=source)
        assert got.dtype == np.float32 and got.shape == (0,)


@pytest.mark.parametrize("source", ["bigwig", "parquet"])
@pytest.mark.parametrize(
    "args, message",
    [
        (("logq", "chr1", 0, 10), "unknown track 'logq'"),
        (("logp", "chr1", 0, 10, "both"), "unknown strand 'both'"),
        (("logp", "chr1", 10, 5), "start 10 and end 5 are not a range"),
        (("logp", "chr1", -1, 5), "start -1 and end 5 are not a range"),
        (("logp", "chrX", 0, 10), "contig 'chrX' is not in"),
        (("logp", "chr1", 2990, 3001), r"end 3001 is past the end of chr1 \(length 3000\)"),
    ],
)
def test_bad_arguments_are_named(run, source, args, message):
    with pytest.raises(ValueError, match=message):
        load_track(run, *args, source=source)


def test_an_unknown_source_is_named(run):
    with pytest.raises(ValueError, match="unknown source 'duckdb'"):
        load_track(run, "logp", "chr1", 0, 10, source="duckdb")


def test_contig_lengths_without_the_manifest_key(data, tmp_path):
    run = make_run(tmp_path / "run", data, strands=("merged",))
    write_manifest(tmp_path / "run", contigs=False)
    # From a bigWig's header.
    got = load_track(run, "prob_G", "chr1", 2000, 3000, "reverse", source="parquet")
    np.testing.assert_array_equal(got, data.expected("chr1", "reverse", "prob_G")[2000:3000])
    with pytest.raises(ValueError, match=r"length 3000"):
        load_track(run, "prob_G", "chr1", 2000, 3001, "reverse", source="parquet")
    # Neither: no range can be checked, so none is answered.
    for path in (tmp_path / "run" / "tracks").iterdir():
        path.unlink()
    with pytest.raises(OutputError, match="no contig lengths"):
        load_track(run, "logp", "chr1", 0, 10, source="parquet")


def test_a_strand_the_run_did_not_score(data, tmp_path):
    run = make_run(tmp_path, data, strands=())
    write_manifest(tmp_path, strands="forward")
    with pytest.raises(ValueError, match="scored only the forward strand"):
        load_track(run, "logp", "chr2", 0, 10, "reverse", source="parquet")


def test_an_incomplete_run_is_refused(data, tmp_path):
    run = make_run(tmp_path, data, strands=("both",))
    os.unlink(tmp_path / MANIFEST)
    with pytest.raises(OutputError, match="not a dnaembed output"):
        load_track(run, "logp", "chr2", 0, 10)


def test_an_output_on_an_object_store(data, run, s3, s3_endpoint):
    options = {"s3": {"endpoint_url": s3_endpoint}}
    s3.put(run, f"out-{s3.name}/run", recursive=True)
    uri = f"s3://out-{s3.name}/run"
    want = data.expected("chr2", "merged", "prob_T")[900:4100]
    for source in ("bigwig", "parquet", "bigwig"):  # the second bigwig read is the cached copy
        got = load_track(uri, "prob_T", "chr2", 900, 4100, "merged", source, options)
        np.testing.assert_array_equal(got, want, err_msg=source)


def test_a_strand_without_rows_reads_as_gaps(data, tmp_path):
    shards = write_shards(tmp_path, [r for r in data.rows if r["strand"] == "+"])
    write_bigwigs(shards, CONTIGS, ["entropy"], "both", str(tmp_path), block_bases=BLOCK)
    write_manifest(tmp_path)
    for source in ("bigwig", "parquet"):
        got = load_track(str(tmp_path), "entropy", "chr2", 10, 2010, "reverse", source)
        assert got.shape == (2000,) and np.isnan(got).all(), source
    # Merged is the one strand there is.
    merged = load_track(str(tmp_path), "entropy", "chr2", 10, 2010, "merged", "parquet")
    np.testing.assert_array_equal(merged, data.expected("chr2", "forward", "entropy")[10:2010])
