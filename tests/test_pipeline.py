"""End to end on a real local Ray with a real vLLM (CPU) engine and real FASTA/FASTQ files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pyarrow as pa
import pytest
from Bio import SeqIO
from transformers import AutoTokenizer

from pipeline.cli import main
from pipeline.embed.reference import HFReferenceEmbedder
from pipeline.errors import OutputError
from pipeline.load.aggregate import aggregate_records
from pipeline.load.loader import load_embeddings, read_manifest, to_numpy
from pipeline.run import run
from pipeline.window.windows import reverse_complement
from tests.conftest import REPO, assert_declared_schema, compose_config
from tests.fastx_fixtures import fasta_text, write

pytestmark = pytest.mark.slow

SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("n_tokens", pa.int32()),
        ("embedding", pa.list_(pa.float32(), 256)),
    ]
)
SIZE, STRIDE, MIN_LEN = 512, 384, 32
SETTINGS = [
    f"window.size={SIZE}",
    f"window.stride={STRIDE}",
    "window.reverse_complement=true",
    "window.n_policy=skip",
    "window.max_n_fraction=0.5",
    f"window.min_length={MIN_LEN}",
    "ray.progress_bars=false",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, genome_fasta):
    d = tmp_path_factory.mktemp("corpus")
    genome = d / "genome.fa.gz"
    with open(genome_fasta, "rb") as src, gzip.open(genome, "wb") as dst:
        shutil.copyfileobj(src, dst)
    rng = np.random.default_rng(11)
    mixed = [
        ("plain first record", "".join(rng.choice(list("ACGT"), 1300))),
        ("soft", "ACGT" * 50 + "acgtacgtnn" * 30 + "GATTACA" * 20),
        ("ambig", "ACGTACGTACRY" * 40 + "ACGTKMSWBDHV"),
        ("empty", ""),
        ("all_n", "N" * 600),
        ("short", "ACGTACGTAC"),
    ]
    write(d / "mixed.fa", fasta_text(mixed, width=61))
    reads = d / "reads.fq.gz"
    shutil.copy(REPO / "pipeline" / "demo" / "reads.fastq.gz", reads)
    return d


def reference_records(corpus) -> dict[tuple[str, str], str]:
    """(file name, id) -> normalised sequence, parsed by Biopython, not by us."""
    out = {}
    for name, fmt in (("genome.fa.gz", "fasta"), ("mixed.fa", "fasta"), ("reads.fq.gz", "fastq")):
        path = corpus / name
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt") as handle:
            for rec in SeqIO.parse(handle, fmt):
                seq = str(rec.seq).upper()
                out[(name, rec.id)] = "".join(c if c in "ACGTN" else "N" for c in seq)
    return out


def expected_windows(seq: str) -> list[tuple[int, int]]:
    if len(seq) < MIN_LEN:
        return []
    out, start = [], 0
    while True:
        end = min(start + SIZE, len(seq))
        window = seq[start:end]
        if end - start >= MIN_LEN and window.count("N") <= 0.5 * len(window):
            out.append((start, end))
        if end == len(seq):
            return out
        start += STRIDE


def first_run_config(corpus, out):
    return compose_config(
        "model=tiny",
        f"input={corpus}",
        f"output={out}",
        "embed.max_batch_tokens=8192",
        "output.rows_per_shard=64",
        *SETTINGS,
    )


@pytest.fixture(scope="module")
def first_run(ray_session, corpus, tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("runs") / "first"
    cfg = first_run_config(corpus, out)
    lines = []
    summary = run(cfg, echo=lines.append)
    return out, summary, lines


def test_output_schema_rows_and_coordinates(first_run, corpus):
    out, summary, lines = first_run
    table = load_embeddings(str(out))
    assert table.schema.remove_metadata() == SCHEMA
    assert_declared_schema(first_run_config(corpus, out), out)
    ref = reference_records(corpus)
    rows = table.to_pylist()
    got = {
        (r["source"].rsplit("/", 1)[1], r["seq_id"], r["start"], r["end"], r["strand"])
        for r in rows
    }
    want = {
        (f, i, s, e, strand)
        for (f, i), seq in ref.items()
        for s, e in expected_windows(seq)
        for strand in "+-"
    }
    assert got == want
    assert len(rows) == len(want)  # each window exactly once
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    assert all(r["n_tokens"] == r["end"] - r["start"] for r in rows)
    emb = table.column("embedding").combine_chunks().flatten().to_numpy()
    assert np.isfinite(emb).all()
    assert summary.windows == len(rows)
    # A short header (input, output, model, engines), then the summary.
    assert lines[0] == f"dnaembed: 3 files -> {out}\n" + (
        f"dnaembed: model tiny (float32), window {SIZE} every {STRIDE}: embedding"
    )
    # The input is a directory: what it gave.
    assert lines[1] == f"dnaembed: input {corpus}: 3 files taken"
    assert lines[2].startswith("dnaembed: cluster ")
    # One engine: its packs are embed.max_batch_tokens (8192 here) whatever the input.
    assert lines[2].endswith(" on cpu, packs of up to 8,192 tokens")
    assert lines[-1].startswith("dnaembed: 31 records (3 skipped), ") and str(out) in lines[-1]
    assert "\ndnaembed: warning: 3 of 31 records skipped (" in lines[-1]


def test_manifest_accounts_for_every_record(first_run, corpus):
    out, _, _ = first_run
    manifest = read_manifest(str(out))
    c = manifest["counts"]
    ref = reference_records(corpus)
    table = load_embeddings(str(out), columns=["source", "seq_id", "n_tokens"])
    embedded = {
        (s, i)
        for s, i in zip(
            table.column("source").to_pylist(), table.column("seq_id").to_pylist(), strict=True
        )
    }
    assert c["records"] == len(ref) == 31
    assert c["records"] == c["records_embedded"] + c["records_skipped"]
    assert c["records_embedded"] == len(embedded)
    reasons = {s["seq_id"]: s["reason"] for s in manifest["skipped_records"]}
    assert set(reasons) == {"empty", "all_n", "short"}
    assert reasons["empty"] == "empty sequence"
    assert c["tokens"] == sum(table.column("n_tokens").to_pylist())
    assert c["windows_skipped_n"] > 0 and c["inputs"] == 3
    assert sum(s["rows"] for s in manifest["shards"]) == c["windows"]
    assert (out / "_config.yaml").read_text().startswith("input:")
    assert manifest["dim"] == 256 and manifest["strands"] == "separate"
    # The default: today's one column, the last layer (2 in the tiny model) mean-pooled.
    assert manifest["embeddings"] == [{"column": "embedding", "layer": 2, "pooling": "mean"}]
    assert "embed" not in manifest["fingerprint_fields"]
    # Every pack's engine time, in start order, adding up to the totals.
    engine = manifest["engine"]
    packs = engine["per_pack"]
    assert len(packs) == engine["packs"] >= 1
    assert sum(k["windows"] for k in packs) == c["windows"]
    assert sum(k["tokens"] for k in packs) == engine["tokens"] == c["tokens"]
    assert [k["start_s"] for k in packs] == sorted(k["start_s"] for k in packs)
    assert packs[0]["start_s"] == 0 and all(k["tokens_per_s"] > 0 for k in packs)
    # Timings, not diagnostics: no CPU sampling in a default run.
    assert all(
        set(k) == {"engine", "start_s", "s", "windows", "tokens", "tokens_per_s"} for k in packs
    )
    # When each engine started, imported vLLM, was built and ready: before its first pack.
    (start,) = engine["starts"]
    assert {k["engine"] for k in packs} == {start["engine"]}
    assert start["t0"] <= start["imported"] <= start["built"] <= start["ready"]
    assert start["ready"] <= engine["first_pack_t0"] < engine["first_pack_t1"]


def test_embeddings_match_the_hf_reference(first_run, corpus, tiny_model):
    out, _, _ = first_run
    ref = reference_records(corpus)
    table = load_embeddings(str(out)).to_pylist()
    sample = [r for r in table if r["seq_id"] in ("soft", "ambig", "read011")]
    sample += [r for r in table if r["seq_id"] == "NC_045512.2"][::20]
    hf = HFReferenceEmbedder(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for r in sample:
        seq = ref[(r["source"].rsplit("/", 1)[1], r["seq_id"])][r["start"] : r["end"]]
        if r["strand"] == "-":
            seq = reverse_complement(seq)
        want = hf.embed([tokenizer(seq, add_special_tokens=False)["input_ids"]])[0]
        got = np.asarray(r["embedding"], dtype=np.float32)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel <= 1e-4 and np.corrcoef(got, want)[0, 1] >= 0.99999, (r["chunk_id"], rel)


def test_ids_stable_across_runs_and_batch_sizes(ray_session, first_run, corpus, tmp_path):
    out, _, _ = first_run
    cfg = compose_config(
        "model=tiny",
        f"input=[{corpus}/mixed.fa,{corpus}/reads.fq.gz]",
        f"output={tmp_path / 'second'}",
        "embed.max_batch_tokens=1500",
        "output.rows_per_shard=7",
        *SETTINGS,
    )
    run(cfg, echo=lambda *_: None)
    first = {r["chunk_id"]: r for r in load_embeddings(str(out)).to_pylist()}
    second = load_embeddings(str(tmp_path / "second")).to_pylist()
    assert second and {r["chunk_id"] for r in second} <= set(first)
    for r in second:
        f = first[r["chunk_id"]]
        assert (f["seq_id"], f["start"], f["end"], f["strand"]) == (
            r["seq_id"],
            r["start"],
            r["end"],
            r["strand"],
        )
        a, b = np.asarray(r["embedding"]), np.asarray(f["embedding"])
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b)
    assert len(read_manifest(str(tmp_path / "second"))["shards"]) > 5


def test_rerun_is_a_no_op_and_other_config_is_refused(first_run, corpus):
    out, summary, _ = first_run
    base = [
        "model=tiny",
        f"input={corpus}",
        f"output={out}",
        "embed.max_batch_tokens=8192",
        "output.rows_per_shard=64",
        *SETTINGS,
    ]
    again = run(compose_config(*base), echo=lambda *_: None)
    assert again.already_complete and again.windows == summary.windows
    with pytest.raises(OutputError, match=r"differs in: window.size, window.stride\)"):
        run(compose_config(*base, "window.size=256", "window.stride=256"), echo=lambda *_: None)


def test_bad_input_fails_cleanly_through_ray(ray_session, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's run directory goes under outputs/ here
    bad = write(tmp_path / "bad.fa", fasta_text([("ok", "ACGT" * 50), ("broken", "ACGTAC>GT")]))
    out = tmp_path / "out"
    code = main(["model=tiny", f"input={bad}", f"output={out}", "ray.progress_bars=false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dnaembed: error: ") and err.count("\n") == 1
    assert "record 'broken' has '>' at position 6 (0-based)" in err
    assert not (out / "_manifest.json").exists()


def test_layers_poolings_and_merged_strands_end_to_end(ray_session, first_run, corpus, tmp_path):
    """Four columns from our engine model, strands merged; the last-layer mean column equals
    the mean of the first run's separate '+' and '-' rows (vLLM's own pooler)."""
    first, _, _ = first_run
    out = tmp_path / "layers"
    base = [
        "model=tiny",
        f"input={corpus}/mixed.fa",
        f"output={out}",
        "embed.max_batch_tokens=4096",
        *SETTINGS,
    ]
    asked = ["embed.layers=[1,-1]", "embed.poolings=[mean,max]", "window.reverse_complement=merge"]
    lines = []
    run(compose_config(*base, *asked), echo=lines.append)
    assert lines[0].endswith(": emb_l1_mean, emb_l1_max, embedding, emb_l2_max, strands merged")
    manifest = read_manifest(str(out))
    assert manifest["embeddings"] == [
        {"column": "emb_l1_mean", "layer": 1, "pooling": "mean"},
        {"column": "emb_l1_max", "layer": 1, "pooling": "max"},
        {"column": "embedding", "layer": 2, "pooling": "mean"},
        {"column": "emb_l2_max", "layer": 2, "pooling": "max"},
    ]
    assert manifest["strands"] == "merged"
    embed = manifest["fingerprint_fields"]["embed"]
    assert embed == {"layers": [1, 2], "poolings": ["mean", "max"]}
    table = load_embeddings(str(out), sort=True)
    assert table.column_names[-4:] == [e["column"] for e in manifest["embeddings"]]
    assert set(table.column("strand").to_pylist()) == {"+"}

    separate = [r for r in load_embeddings(str(first)).to_pylist() if "mixed.fa" in r["source"]]
    by_span = {}
    for r in separate:
        by_span.setdefault((r["seq_id"], r["start"], r["end"]), []).append(r)
    rows = table.to_pylist()
    assert len(rows) == len(by_span)
    for r in rows:
        pair = by_span[(r["seq_id"], r["start"], r["end"])]
        assert sorted(p["strand"] for p in pair) == ["+", "-"]
        # Merged rows are other numbers than '+' rows: another chunk id.
        assert r["chunk_id"] not in {p["chunk_id"] for p in pair}
        want = np.mean([p["embedding"] for p in pair], axis=0)
        got = np.asarray(r["embedding"])
        assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want), r["chunk_id"]

    with pytest.raises(ValueError, match="several embedding columns"):
        to_numpy(str(out))
    meta, emb = to_numpy(str(out), embedding="emb_l1_max")
    assert emb.shape == (len(rows), 256) and "emb_l1_max" not in meta.column_names
    records = aggregate_records(str(out), embedding="embedding")
    assert records.num_rows == len({r["seq_id"] for r in rows})
    with pytest.raises(OutputError, match=r"differs in: embed.layers\)"):
        run(compose_config(*base, "embed.layers=[0,-1]", *asked[1:]), echo=lambda *_: None)
