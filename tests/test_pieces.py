"""One bgzip FASTA of real DNA run whole and as pieces (input.split_bases), end to end on a
real local Ray with the real vLLM (CPU) engine: the same chunk ids, embeddings and manifest
counts; and a bad base in a later piece fails the run naming its record and position."""

from __future__ import annotations

import re

import numpy as np
import pysam
import pytest

from pipeline.errors import InputError, find_user_error
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.read.reference import Reference
from pipeline.run import plan, run, stages
from pipeline.stages import RunStats, StatsSink, add_stage
from tests.conftest import compose_config
from tests.reference_fixtures import read_genome, write_fasta

pytestmark = pytest.mark.slow

SPLIT = 4096
SETTINGS = [
    "model=tiny",
    "window.size=1024",
    "window.stride=768",
    "window.reverse_complement=true",
    "window.last=shift",
    "window.min_length=32",
    "embed.max_batch_tokens=32768",
    "ray.progress_bars=false",
]
COUNTS = (
    "inputs",
    "records",
    "records_skipped",
    "records_embedded",
    "bases",
    "bases_uncovered",
    "windows",
    "windows_skipped_n",
    "windows_dropped",
    "windows_embedded",
    "tokens",
)


def records(genome: str) -> dict[str, str]:
    """20,000 bases of the genome (5 pieces of 4096 bases), a slice with soft-masking and
    ambiguity codes (2 pieces), an empty record, one shorter than window.min_length, one
    shorter than a window: 70 windows in all."""
    part = genome[21000:27000]
    part = part[:2000] + part[2000:3000].lower() + "RYKMSWBDHV" + part[3010:]
    return {
        "NC_045512.2": genome[:20000],
        "slice": part,
        "gap": "",
        "short": genome[100:120],
        "one": genome[200:900],
    }


def bgzip_fasta(path, contigs):
    """A bgzip FASTA indexed by pyfaidx (as dnaembed indexes references), which lists empty
    records; samtools' .fai leaves them out."""
    plain = write_fasta(path.with_suffix(""), contigs)
    pysam.tabix_compress(str(plain), str(path), force=True)
    Reference.prepare(str(path))
    return path


@pytest.fixture(scope="module")
def genome_gz(tmp_path_factory, genome_fasta):
    d = tmp_path_factory.mktemp("pieces")
    return bgzip_fasta(d / "genome.fa.gz", records(read_genome(genome_fasta)))


@pytest.fixture(scope="module")
def runs(ray_session, genome_gz, tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("piece_runs")
    done = {}
    for name, split in (("whole", 0), ("split", SPLIT)):
        cfg = compose_config(
            *SETTINGS, f"input={genome_gz}", f"output={out / name}", f"input.split_bases={split}"
        )
        done[name] = (out / name, run(cfg, echo=lambda *_: None), plan(cfg))
    return done


def test_the_split_run_reads_the_file_in_several_tasks(runs, genome_gz):
    _, _, whole = runs["whole"]
    _, _, split = runs["split"]
    assert whole.items == [{"source": str(genome_gz)}]
    pieces = split.items
    assert len(pieces) >= 7 and [r["piece"] for r in pieces] == list(range(len(pieces)))
    assert {r["source"] for r in pieces} == {str(genome_gz)}
    # The read stage of the plan, on Ray: one task per piece.
    import ray

    stats = StatsSink(ray.remote(RunStats).remote())
    ds = ray.data.from_items(pieces, override_num_blocks=len(pieces))
    for stage in stages(split, stats)[:2]:
        ds = add_stage(ds, stage, 1)
    ds = ds.materialize()
    tasks = [int(n) for n in re.findall(r"ReadStage.*?: .*?(\d+) tasks executed", ds.stats())]
    assert tasks == [len(pieces)], ds.stats()
    totals = stats.totals()
    manifest = read_manifest(str(runs["whole"][0]))
    assert totals["windows"] == manifest["counts"]["windows"]
    assert totals["inputs"] == manifest["inputs"]


def test_the_same_chunk_ids_and_embeddings(runs):
    whole = load_embeddings(str(runs["whole"][0])).to_pylist()
    split = {r["chunk_id"]: r for r in load_embeddings(str(runs["split"][0])).to_pylist()}
    assert len(whole) == len(split) == 70
    assert {r["chunk_id"] for r in whole} == set(split)
    for w in whole:
        s = split[w["chunk_id"]]
        for key in ("source", "seq_id", "start", "end", "strand", "n_tokens"):
            assert s[key] == w[key], (key, w["chunk_id"])
        a, b = np.asarray(s["embedding"]), np.asarray(w["embedding"])
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b), w["chunk_id"]


def test_the_same_manifest(runs):
    whole = read_manifest(str(runs["whole"][0]))
    split = read_manifest(str(runs["split"][0]))
    assert {k: split["counts"][k] for k in COUNTS} == {k: whole["counts"][k] for k in COUNTS}
    assert whole["counts"]["records"] == 5 and whole["counts"]["records_skipped"] == 2
    assert split["skipped_records"] == whole["skipped_records"]
    assert [s["seq_id"] for s in whole["skipped_records"]] == ["gap", "short"]
    assert split["inputs"] == whole["inputs"] and split["input_errors"] == []
    # input.split_bases shares the work out; it changes nothing made.
    assert split["fingerprint"] == whole["fingerprint"]
    assert runs["split"][1].windows == runs["whole"][1].windows


def test_a_bad_base_in_a_later_piece_names_record_and_position(
    ray_session, tmp_path, genome_fasta, monkeypatch
):
    from pipeline import precheck

    bad = records(read_genome(genome_fasta))
    seq = bad["NC_045512.2"]
    bad["NC_045512.2"] = seq[:17000] + "U" + seq[17001:]
    path = bgzip_fasta(tmp_path / "bad.fa.gz", bad)
    # As a file too large for the driver to read whole: the pieces' readers find the base.
    monkeypatch.setattr(precheck, "SMALL_FILE", 0)
    p = plan(
        compose_config(*SETTINGS, f"input={path}", "output=unused", f"input.split_bases={SPLIT}")
    )
    # The bad base lies in a later piece of the record.
    assert any(r["record_index"] == 0 and r["piece_start"] > 12000 for r in p.items)
    import ray

    ds = ray.data.from_items(p.items, override_num_blocks=len(p.items))
    for stage in stages(p, StatsSink())[:2]:
        ds = add_stage(ds, stage, 1)
    with pytest.raises(Exception) as failed:
        ds.materialize()
    error = find_user_error(failed.value)
    assert isinstance(error, InputError)
    # Ray adds its own lines after the message.
    assert str(error).startswith(
        f"{path}: record 'NC_045512.2' has 'U' at position 17000 (0-based), outside IUPAC DNA; "
        "set input.rna=to_t to read RNA"
    )
