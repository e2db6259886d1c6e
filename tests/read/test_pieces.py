"""One indexed FASTA read as pieces: the plan's arithmetic (a property over record lengths and
window geometry), and every piece read and windowed against one whole read of the same real
files, plain and bgzip, indexed by samtools (pysam) or pyfaidx."""

from __future__ import annotations

import gzip
import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pysam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.compose import compose, to_config
from pipeline.config import InputConfig, Progress, WindowConfig
from pipeline.console import ProgressReporter
from pipeline.errors import ConfigError, InputError
from pipeline.identity import fingerprint_fields
from pipeline.read.pieces import boundaries, final_start, parts, plan_pieces
from pipeline.read.reference import Reference
from pipeline.read.sources import expand_inputs
from pipeline.read.stage import ReadStage
from pipeline.rows import PIECE_COLUMNS
from pipeline.stages import StatsSink
from pipeline.window.stage import WindowStage
from pipeline.window.windows import MASK, spans
from tests.reference_fixtures import cut_contigs, read_genome, write_fasta

SPLIT = 4096
# (size, stride, last, reverse_complement, min_length)
GEOMETRIES = [
    (1024, 768, "shift", True, 32),
    (1000, None, "keep", False, 1),
    (700, 300, "drop", "merge", 1),
    (512, 500, "keep", False, 100),  # final windows shorter than min_length are dropped
]
COUNTS = (
    "records",
    "bases",
    "records_skipped",
    "windows",
    "windows_skipped_n",
    "windows_dropped",
    "bases_uncovered",
)


@pytest.fixture(scope="module")
def contigs(genome_fasta) -> dict[str, str]:
    """Real DNA: two long contigs (one soft-masked in part), a 1-base one, a record shorter
    than some window.min_length, and one with ambiguity codes."""
    g = read_genome(genome_fasta)
    ambig = g[20000:21500]
    ambig = ambig[:300] + "RYKM" + ambig[304:900].lower() + "n" + ambig[901:]
    return {**cut_contigs(genome_fasta), "short": g[:20], "ambig": ambig}


def index(path: Path, by: str = "samtools") -> Path:
    if by == "samtools":
        pysam.faidx(str(path))
    else:
        Reference.prepare(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, contigs) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pieces")
    plain = write_fasta(d / "genome.fa", contigs)
    bgzip = d / "genome.fa.gz"
    pysam.tabix_compress(str(plain), str(bgzip), force=True)
    return {"plain": index(plain), "bgzip": index(bgzip)}


def window_config(size, stride, last, rc, min_length) -> WindowConfig:
    return WindowConfig(
        size=size, stride=stride, last=last, reverse_complement=rc, min_length=min_length
    )


def plan(path: Path, w: WindowConfig, split: int = SPLIT, **input_cfg) -> list[dict]:
    cfg = InputConfig(path=str(path), split_bases=split, **input_cfg)
    return plan_pieces(expand_inputs(str(path)), cfg, w)


def read_and_window(rows: list[dict], w: WindowConfig, **read_kw):
    """Windows by chunk id, the merged reports, and the progress counters."""
    stats = StatsSink()
    reader = ReadStage(stats=stats, window=w, **read_kw)
    windower = WindowStage(w, "model", stats)
    windows = {}
    for row in rows:
        for records in reader(pa.Table.from_pylist([row])):
            for table in windower(records):
                for r in table.to_pylist():
                    assert r["chunk_id"] not in windows
                    windows[r["chunk_id"]] = r
    return windows, stats.totals(), stats.progress()


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}-{g[1]}-{g[2]}-{g[3]}")
@pytest.mark.parametrize("kind", ["plain", "bgzip"])
def test_pieces_make_the_windows_and_counts_of_one_whole_read(files, kind, geometry):
    path = files[kind]
    w = window_config(*geometry)
    rows = plan(path, w)
    assert len(rows) >= 8 and all(r["piece"] == i for i, r in enumerate(rows))
    whole, whole_stats, whole_progress = read_and_window([{"source": rows[0]["source"]}], w)
    split, split_stats, split_progress = read_and_window(rows, w)

    assert split.keys() == whole.keys() and split == whole
    for key in COUNTS:
        assert split_stats.get(key, 0) == whole_stats.get(key, 0), key
    assert split_stats["windows_hash"] & MASK == whole_stats["windows_hash"] & MASK
    assert split_stats["inputs"] == whole_stats["inputs"]
    assert len(split_stats["inputs"]) == 1 and split_stats["inputs"][0]["complete"]
    by_id = lambda s: s["seq_id"]  # noqa: E731
    assert sorted(split_stats["skipped"], key=by_id) == sorted(whole_stats["skipped"], key=by_id)
    for progress in (whole_progress, split_progress):
        assert progress["inputs_read"] == 1
        assert progress["records_windowed"] == progress["records_to_window"]


def test_progress_knows_the_windows_only_once_every_piece_is_windowed(files):
    w = window_config(*GEOMETRIES[0])
    rows = plan(files["bgzip"], w)
    _, _, first = read_and_window(rows[:1], w)
    _, _, others = read_and_window(rows[1:], w)
    reporter = ProgressReporter(lambda: {}, inputs=1, mode=Progress.off)
    base = {"windows_embedded": 0, "windows_resumed": 0, "engine_tokens": 0}
    assert first["inputs_read"] == 1 and first["records_windowed"] < first["records_to_window"]
    assert "/?" in reporter.line({**base, **first}, 0.0)
    both = {k: first[k] + others[k] for k in first}
    assert both["inputs_read"] == 1
    assert "/?" not in reporter.line({**base, **both}, 1.0)


@st.composite
def layouts(draw):
    size = draw(st.integers(1, 400))
    stride = draw(st.integers(1, size))
    return (
        draw(st.lists(st.integers(0, 2500), min_size=1, max_size=6)),
        WindowConfig(
            size=size,
            stride=stride,
            last=draw(st.sampled_from(["keep", "shift", "drop"])),
            min_length=draw(st.integers(1, size)),
        ),
        draw(st.integers(1, 3000)),
    )


@settings(max_examples=250, deadline=None)
@given(layouts())
def test_every_window_starts_in_exactly_one_piece(layout):
    lengths, w, split = layout
    step = w.step
    windows = {r: spans(n, w.size, step, w.last) for r, n in enumerate(lengths)}
    for r, n in enumerate(lengths):
        kept = windows[r] if n >= w.min_length else []
        assert final_start(n, w) == (kept[-1][0] if kept else None)

    starts = boundaries(lengths, w, split)
    assert starts[0] == (0, 0) and starts == sorted(set(starts))
    for r, pos in starts:  # inside a record: a multiple of the step, a window start
        assert pos == 0 or (pos % step == 0 and pos <= final_start(lengths[r], w))
    ends = [*starts[1:], (len(lengths), 0)]
    seen, counted = [], Counter()
    covered = {r: bytearray(n) for r, n in enumerate(lengths)}
    for begin, end in zip(starts, ends, strict=True):
        piece = list(parts(lengths, begin, end, w))
        assert piece, (begin, end)
        assert sum(hi - lo for _, lo, hi in piece) <= max(split, step) + w.size + step
        for r, lo, hi in piece:
            assert 0 <= lo <= hi <= lengths[r]
            # What the window stage keeps (windows inside the bases read) are exactly the
            # windows that start in this piece.
            inside = [(s, e) for s, e in windows[r] if lo <= s and e <= hi]
            assert inside == [(s, e) for s, e in windows[r] if begin <= (r, s) < end]
            seen += [(r, s) for s in inside]
            covered[r][lo:hi] = b"\x01" * (hi - lo)
            counted[r] += lo == 0
    assert seen == [(r, s) for r, ws in windows.items() for s in ws]
    assert counted == Counter(range(len(lengths)))  # each record counted by one piece
    assert all(all(c) for c in covered.values())  # every base is read, so validated


def test_a_bad_base_in_a_later_piece_names_the_record_and_its_position(tmp_path, contigs):
    bad = dict(contigs)
    b = bad["chrB"]
    bad["chrB"] = b[:15000] + "X" + b[15001:]
    path = index(write_fasta(tmp_path / "bad.fa", bad))
    w = window_config(*GEOMETRIES[0])
    rows = plan(path, w)
    with pytest.raises(InputError) as whole:
        read_and_window([{"source": rows[0]["source"]}], w)
    assert "record 'chrB' has 'X' at position 15000 (0-based)" in str(whole.value)
    failed = []
    for row in rows:
        try:
            read_and_window([row], w)
        except InputError as e:
            failed.append((row, str(e)))
    # Windows overlap, so the pieces reading base 15000 of chrB all fail, and say the same as
    # the whole read: the record, and the position in the record, not in the piece.
    assert failed and all(row["piece"] > 0 and row["record_index"] == 1 for row, _ in failed)
    assert all(row["piece_start"] > 0 for row, _ in failed)
    assert {message for _, message in failed} == {str(whole.value)}


def test_empty_records_need_an_index_that_lists_them(tmp_path, contigs):
    """samtools faidx leaves empty records out of its .fai; pyfaidx's lists them."""
    records = {"chrA": contigs["chrA"], "gap": "", "chrB": contigs["chrB"]}
    w = window_config(*GEOMETRIES[0])
    for by in ("samtools", "pyfaidx"):
        (tmp_path / by).mkdir()
        path = index(write_fasta(tmp_path / by / "e.fa", records), by)
        rows = plan(path, w)
        assert len(rows) > 2
        whole, whole_stats, _ = read_and_window([{"source": rows[0]["source"]}], w)
        if by == "samtools":
            with pytest.raises(InputError, match=r"before record 'chrB'.*split_bases=0"):
                read_and_window(rows, w)
            continue
        split, split_stats, _ = read_and_window(rows, w)
        assert split == whole and split_stats["records"] == whole_stats["records"] == 3
        assert split_stats["skipped"] == whole_stats["skipped"]
        assert [s["reason"] for s in split_stats["skipped"]] == ["empty sequence"]


def whole_rows(rows) -> bool:
    return all(set(r) == {"source"} for r in rows)


@pytest.mark.parametrize(
    "setting",
    [
        {"split": 0},
        {"on_error": "skip"},
        {"window": {"n_policy": "skip"}},
        {"format": "fastq"},
        {"split": 10**9},  # one piece
    ],
    ids=str,
)
def test_settings_that_decide_per_record_read_files_whole(files, setting):
    w = WindowConfig(size=1024, stride=768, **setting.get("window", {}))
    extra = {k: v for k, v in setting.items() if k in ("on_error", "format")}
    rows = plan(files["bgzip"], w, setting.get("split", SPLIT), **extra)
    assert whole_rows(rows) and len(rows) == 1


def test_files_without_a_usable_index_are_read_whole(tmp_path, files):
    w = WindowConfig(size=1024, stride=768)
    d = tmp_path / "in"
    d.mkdir()
    # No index beside it.
    shutil.copy(files["plain"], d / "noindex.fa")
    # Plain gzip: no random access, whatever lies beside it.
    with open(files["plain"], "rb") as src, gzip.open(d / "gzip.fa.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    for sfx in (".fai", ".gzi"):
        shutil.copy(str(files["bgzip"]) + sfx, str(d / "gzip.fa.gz") + sfx)
    # An index older than its file.
    shutil.copy(files["plain"], d / "stale.fa")
    shutil.copy(str(files["plain"]) + ".fai", d / "stale.fa.fai")
    os.utime(d / "stale.fa.fai", (1, 1))
    # FASTQ, even beside a .fai.
    (d / "reads.fq").write_text("@r\n" + "ACGT" * 3000 + "\n+\n" + "I" * 12000 + "\n")
    (d / "reads.fq.fai").write_text("r\t12000\t3\t12000\t12001\t12006\n")
    cfg = InputConfig(path=str(d), split_bases=SPLIT)
    rows = plan_pieces(expand_inputs(str(d)), cfg, w)
    assert whole_rows(rows) and len(rows) == 4
    # One file split beside others: every row has every column, None where unset.
    shutil.copy(files["bgzip"], d / "split.fa.gz")
    for sfx in (".fai", ".gzi"):
        shutil.copy(str(files["bgzip"]) + sfx, str(d / "split.fa.gz") + sfx)
    rows = plan_pieces(expand_inputs(str(d)), cfg, w)
    assert all(set(r) == {"source", *PIECE_COLUMNS} for r in rows)
    split = [r for r in rows if r["piece"] is not None]
    assert {r["source"] for r in split} == {str(d / "split.fa.gz")}
    assert len(rows) - len(split) == 4


def test_split_bases_is_checked_and_left_out_of_the_fingerprint():
    base = ["input=x.fa", "output=o", "model=tiny"]
    with pytest.raises(ConfigError, match=r"input.split_bases must be >= 0, got -1"):
        to_config(compose([*base, "input.split_bases=-1"]))
    default = fingerprint_fields(to_config(compose(base)))
    assert "split_bases" not in default["input"]
    assert fingerprint_fields(to_config(compose([*base, "input.split_bases=0"]))) == default
