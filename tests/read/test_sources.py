from __future__ import annotations

import os

import pytest

from pipeline.errors import InputError
from pipeline.read.sources import expand_inputs, format_from_name


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
    assert uris(str(tmp_path)) == ["a.fa", "b.fa.gz", "c.fastq"]
    # A file named twice is read once.
    assert uris([str(tmp_path / "a.fa"), str(tmp_path / "*.fa")]) == ["a.fa"]
    assert expand_inputs(str(tmp_path / "a.fa"))[0].uri == str(tmp_path / "a.fa")


def test_missing_inputs_name_the_path(tmp_path):
    with pytest.raises(InputError, match="input not found: .*missing.fa"):
        expand_inputs(str(tmp_path / "missing.fa"))
    with pytest.raises(InputError, match="no files match"):
        expand_inputs(str(tmp_path / "*.fq"))
    with pytest.raises(InputError, match="directory holds no FASTA/FASTQ"):
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
