from __future__ import annotations

import gzip
import io

import pytest
from Bio import SeqIO

from pipeline.errors import InputError
from pipeline.read.fastx import iter_records, sniff_format
from tests.fastx_fixtures import fasta_text, fastq_text, random_records, write


def read_all(path, **kw):
    return [(r.seq_id, r.sequence) for r in iter_records(str(path), **kw)]


@pytest.mark.parametrize("width", [None, 60, 1])
@pytest.mark.parametrize("gz", [False, True])
def test_fasta_matches_generator_and_biopython(tmp_path, width, gz):
    records = random_records(seed=1, n=12, min_len=1)
    path = write(tmp_path / "x.fa", fasta_text(records, width), gz=gz)
    ours = read_all(path)
    assert ours == [(h.split()[0], s) for h, s in records]
    handle = io.StringIO(gzip.decompress(path.read_bytes()).decode() if gz else path.read_text())
    reference = [(r.id, str(r.seq)) for r in SeqIO.parse(handle, "fasta")]
    assert ours == reference


@pytest.mark.parametrize("gz", [False, True])
def test_fastq_equals_fasta(tmp_path, gz):
    records = random_records(seed=2, n=8, min_len=1, max_len=500)
    fa = write(tmp_path / "x.fa", fasta_text(records))
    fq = write(tmp_path / "x.fq", fastq_text(records), gz=gz)
    assert read_all(fq) == read_all(fa)
    assert sniff_format(str(fq)) == "fastq"


def test_format_sniffed_from_content_not_name(tmp_path):
    records = random_records(seed=3, n=2, min_len=5)
    odd = write(tmp_path / "reads.txt", fastq_text(records), gz=True)
    assert read_all(odd) == [(h.split()[0], s) for h, s in records]
    with pytest.raises(InputError, match="input.format=fasta but the file is fastq"):
        read_all(odd, fmt="fasta")


def test_crlf_and_soft_mask_and_description(tmp_path):
    path = write(
        tmp_path / "x.fa",
        fasta_text([("chr1 some description", "acgtNNACGT")], width=4, newline="\r\n"),
    )
    assert read_all(path) == [("chr1", "ACGTNNACGT")]


def test_ambiguity_codes_mapped_or_kept(tmp_path):
    path = write(tmp_path / "x.fa", fasta_text([("r", "ACRYGTkm")]))
    assert read_all(path) == [("r", "ACNNGTNN")]
    assert read_all(path, ambiguity_codes="keep") == [("r", "ACRYGTKM")]


def test_invalid_character_names_record_and_position(tmp_path):
    path = write(tmp_path / "x.fa", fasta_text([("ok", "ACGT"), ("bad one", "ACGTAXGT")]))
    with pytest.raises(InputError, match=r"record 'bad' has 'X' at position 5 \(0-based\)"):
        read_all(path)
    assert read_all(path, invalid_chars="to_n") == [("ok", "ACGT"), ("bad", "ACGTANGT")]


@pytest.mark.parametrize("char", ["U", "-", "*", "\t", "\xe9"])
def test_non_dna_characters_rejected(tmp_path, char):
    path = write(tmp_path / "x.fa", f">r\nAC{char}GT\n")
    with pytest.raises(InputError, match="position 2"):
        read_all(path)


def test_duplicate_ids_rejected(tmp_path):
    path = write(tmp_path / "x.fa", fasta_text([("a x", "AC"), ("b", "GT"), ("a y", "TT")]))
    with pytest.raises(InputError, match="duplicate sequence id 'a' \\(record 2\\)"):
        read_all(path)


def test_empty_record_is_read(tmp_path):
    path = write(tmp_path / "x.fa", ">empty\n>full\nACGT\n")
    assert read_all(path) == [("empty", ""), ("full", "ACGT")]


def test_empty_header_rejected(tmp_path):
    path = write(tmp_path / "x.fa", ">\nACGT\n")
    with pytest.raises(InputError, match="record 0 has an empty header"):
        read_all(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, text):
    path = write(tmp_path / "x.fa", text)
    with pytest.raises(InputError, match="no FASTA/FASTQ records"):
        read_all(path)


def test_not_fastx_is_an_error(tmp_path):
    path = write(tmp_path / "x.fa", "chrom\tstart\tend\n")
    with pytest.raises(InputError, match="not FASTA or FASTQ.*its name says fasta"):
        read_all(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        read_all(tmp_path / "nope.fa")


def test_truncated_gzip_names_the_file(tmp_path):
    full = write(tmp_path / "full.fa.gz", fasta_text(random_records(4, 20, 500, 900)), gz=True)
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(InputError, match=r"cut\.fa\.gz: truncated or corrupt gzip"):
        read_all(cut)


def test_fastq_quality_length_mismatch(tmp_path):
    path = write(tmp_path / "x.fq", "@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII\n")
    with pytest.raises(
        InputError,
        match=r"x\.fq: malformed fastq record 1 \(0-based\) 'r2': quality has 2 characters, "
        r"the sequence 4",
    ):
        read_all(path)


def test_rna_is_an_error_naming_the_key_or_read_as_dna(tmp_path):
    path = write(tmp_path / "x.fa", fasta_text([("ok", "ACGT"), ("mrna", "acguUUAG")]))
    with pytest.raises(InputError, match=r"record 'mrna' has 'U' at position 3 .*input.rna=to_t"):
        read_all(path)
    assert read_all(path, rna="to_t") == [("ok", "ACGT"), ("mrna", "ACGTTTAG")]
