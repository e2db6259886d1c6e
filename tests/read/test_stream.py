"""A FASTA file read whole (no index) streams: long records come in parts that make the same
windows as the whole record, and the read task's memory does not grow with the file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import WindowConfig
from pipeline.read.fastx import iter_fasta_parts, scan_contigs
from pipeline.read.stage import ReadStage
from pipeline.window.stage import WindowStage
from pipeline.window.tracks import TrackWindowStage

REPO = Path(__file__).resolve().parents[2]


def random_fasta(path: Path, records: dict[str, int], seed: int = 0, line: int = 61) -> Path:
    """Random bases (some soft-masked, some N), gzip level 1."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGTacgtN", np.uint8)
    with gzip.open(path, "wb", compresslevel=1) as f:
        for name, n in records.items():
            f.write(f">{name} random\n".encode())
            seq = alphabet[rng.integers(0, len(alphabet), n)].tobytes()
            f.write(b"\n".join(seq[i : i + line] for i in range(0, n, line)) + b"\n")
    return path


def windows(stages, path: Path) -> list[tuple]:
    read, window = stages
    out = []
    for table in read(pa.table({"source": [str(path)]})):
        for w in window(table):
            out += zip(*(w.column(c).to_pylist() for c in w.column_names), strict=True)
    return out


RECORDS = {"a": 5_000, "b": 123_457, "empty": 0, "c": 99_999, "d": 300}


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return random_fasta(tmp_path_factory.mktemp("stream") / "r.fa.gz", RECORDS)


@pytest.mark.parametrize(
    "size,stride,last",
    [(1000, 700, "keep"), (1000, None, "shift"), (512, 100, "drop"), (2048, None, "keep")],
)
@pytest.mark.parametrize("part", [1, 3_000, 50_001])
def test_parts_make_the_windows_of_the_whole_record(fasta, size, stride, last, part):
    w = WindowConfig(size=size, stride=stride, last=last)
    whole = windows((ReadStage(window=w, part_bases=None), WindowStage(w, "k")), fasta)
    parts = windows((ReadStage(window=w, part_bases=part), WindowStage(w, "k")), fasta)
    assert parts == whole and whole


def test_parts_make_the_track_windows_of_the_whole_record(fasta):
    w = WindowConfig(size=1000, stride=800)

    def stages(part):
        return ReadStage(window=w, part_bases=part), TrackWindowStage(w, 200, ("+", "-"), "k")

    assert windows(stages(2_500), fasta) == windows(stages(None), fasta)


def test_parts_overlap_by_the_windows_overhang_and_validate_every_base(fasta):
    parts = list(iter_fasta_parts(str(fasta), 1000, 700, 10_000))
    b = [p for p in parts if p.seq_id == "b"]
    span = 10_000 // 700 * 700  # parts start at window starts
    assert [p.offset for p in b] == list(range(0, span * len(b), span))
    assert all(p.length is None for p in b[:-1]) and b[-1].length == RECORDS["b"]
    assert all(len(p.sequence) == span + 300 for p in b[:-1])
    assert set("".join(p.sequence for p in parts)) <= set("ACGTN")


def test_a_bad_base_in_a_later_part_is_named_with_its_position(tmp_path):
    path = tmp_path / "bad.fa"
    seq = "ACGT" * 10_000
    path.write_text(">x\n" + seq[:30_001] + "J" + seq[30_002:] + "\n")
    from pipeline.read.fastx import InvalidBase

    with pytest.raises(InvalidBase, match=r"record 'x' has 'J' at position 30001"):
        list(iter_fasta_parts(str(path), 100, 100, 1_000))


def test_scan_contigs_counts_the_bases_of_each_record(fasta):
    assert scan_contigs(str(fasta)) == list(RECORDS.items())


# The read task (read, window, tokenize: as the run fuses them) in a process of its own, with
# its peak resident memory at the end.
_MEASURE = """
import json, resource, sys
import pyarrow as pa
from pipeline.config import WindowConfig
from pipeline.read.stage import ReadStage
from pipeline.tokenize.stage import TokenizeStage
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from pipeline.window.stage import WindowStage
from pipeline.models.tiny import tiny_model_path

w = WindowConfig(size=8192)
tok = DnaTokenizer(TokenizerSpec(str(tiny_model_path())))
stages = [ReadStage(window=w), WindowStage(w, "k"), TokenizeStage(tok, 8192, 1 << 20)]
tokens = 0

def run(i, tables):
    global tokens
    for t in tables:
        if i == len(stages):
            tokens += t.num_rows
            continue
        run(i + 1, stages[i](t) if i < 2 else [stages[i](t)])

run(0, [pa.table({"source": [sys.argv[1]]})])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mib": peak, "packs": tokens}))
"""


def peak_mib(path: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


@pytest.mark.slow
def test_the_read_task_memory_does_not_grow_with_one_long_record(tmp_path):
    small = random_fasta(tmp_path / "1x.fa.gz", {"chr": 10_000_000}, seed=1)
    large = random_fasta(tmp_path / "4x.fa.gz", {"chr": 40_000_000}, seed=2)
    a, b = peak_mib(small), peak_mib(large)
    # Read whole, 30 more Mbp would hold 30 MB of text several times over (the record, its
    # normalised copy, the windows); in parts, the peak is the part's.
    assert b - a < 40, (a, b)
