from __future__ import annotations

import os

import pytest

from pipeline.errors import InputError
from pipeline.read.sources import expand_inputs, find_inputs, format_from_name


def test_paths_globs_directories_and_lists(tmp_path):
    for name in ("a.fa", "b.fa.gz", "c.fastq", "notes.txt"):
        (tmp_path / name).write_text(">x\nA\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.fa").write_text(">x\nA\n")

    def uris(paths):
        return [os.path.basename(s.uri) for s in expand_inputs(paths)]

    assert uris(str(tmp_path / "a.fa")) == ["a.fa"]
    assert uris(str(tmp_path / "*.fa*")) == ["a.fa", "b.fa.gz", "c.fastq"]
    assert uris(str(tmp_path / "[ab].*")) == ["a.fa", "b.fa.gz"]
    # A directory: every depth, by name.
    assert uris(str(tmp_path)) == ["a.fa", "b.fa.gz", "c.fastq", "d.fa"]
    # A file named twice is read once.
    assert uris([str(tmp_path / "a.fa"), str(tmp_path / "*.fa")]) == ["a.fa"]
    assert expand_inputs(str(tmp_path / "a.fa"))[0].uri == str(tmp_path / "a.fa")


def test_a_directory_is_searched_at_every_depth_and_says_what_it_passed_over(tmp_path):
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for name in (
        "top.fa",
        "top.fa.fai",  # an index beside its FASTA: neither taken nor worth a word
        "sub/deep/deep.fq.gz",
        "reads.fa.txt",
        "sub/notes.md",
        ".ipynb_checkpoints/top-checkpoint.fa",  # a hidden copy: not read twice
    ):
        (tmp_path / name).write_text(">x\nA\n")
    found = find_inputs(str(tmp_path))
    assert [os.path.relpath(s.uri, tmp_path) for s in found.sources] == [
        "sub/deep/deep.fq.gz",
        "top.fa",
    ]
    (note,) = found.notes
    assert note.startswith(f"input {tmp_path}: 2 files taken, 3 files passed over (")
    assert ".ipynb_checkpoints/top-checkpoint.fa, reads.fa.txt, sub/notes.md" in note
    assert "top.fa.fai" not in note and ".fa/.fasta" in note
    # Named by itself, a file is read whatever its name.
    assert find_inputs(str(tmp_path / "reads.fa.txt")).notes == []
    # Many names: the first five, and how many more.
    for i in range(7):
        (tmp_path / f"x{i}.csv").write_text("a,b\n")
    assert "sub/notes.md, x0.csv, x1.csv, and 5 more)" in find_inputs(str(tmp_path)).notes[0]


def test_missing_inputs_name_the_path(tmp_path):
    with pytest.raises(InputError, match="input not found: .*missing.fa"):
        expand_inputs(str(tmp_path / "missing.fa"))
    with pytest.raises(InputError, match="no files match"):
        expand_inputs(str(tmp_path / "*.fq"))
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "reads.fa.txt").write_text(">x\nA\n")
    with pytest.raises(InputError, match=r"directory holds no FASTA/FASTQ .*found deep/reads"):
        expand_inputs(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("x.fa", "fasta"),
        ("x.FASTA.gz", "fasta"),
        ("x.fna.bgz", "fasta"),
        ("x.fq.gz", "fastq"),
        ("x.fastq", "fastq"),
        ("x.bam", None),
    ],
)
def test_format_from_name(name, fmt):
    assert format_from_name(name) == fmt
