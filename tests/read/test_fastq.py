from __future__ import annotations

import io

import pytest
from Bio.SeqIO.QualityIO import FastqGeneralIterator
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.read.fastq import Malformed, parse_fastq

# Biopython's own hard case: '@' and '+' at the start of quality lines, a record over lines.
TRICKY = """@071113_EAS56_0053:1:1:998:236
TTTCTTGCCCCCATAGACTGAGACCTTCCCTAAATA
+071113_EAS56_0053:1:1:998:236
IIIIIIIIIIIIIIIIIIIIIIIIIIIIICII+III
@071113_EAS56_0053:1:1:182:712
ACCCAGCTAATTTTTGTATTTTTGTTAGAGACAGTG
+
@IIIIIIIIIIIIIIICDIIIII<%<6&-*).(*%+
@071113_EAS56_0053:1:1:153:10
TGTTCTGAAGGAAGGTGTGCGTGCGTGTGTGTGTGT
+
IIIIIIIIIIIICIIGIIIII>IAIIIE65I=II:6
@071113_EAS56_0053:1:3:990:501
TGGGAGGTTTTATGTGGA
AAGCAGCAATGTACAAGA
+
IIIIIII.IIIIII1@44
@-7.%<&+/$/%4(++(%
"""


def ours(text):
    return list(parse_fastq(io.StringIO(text)))


def biopython(text):
    return [(t, s) for t, s, _ in FastqGeneralIterator(io.StringIO(text))]


def test_tricky_file_matches_biopython():
    assert ours(TRICKY) == biopython(TRICKY)
    assert len(ours(TRICKY)) == 4


@st.composite
def fastq_files(draw):
    n = draw(st.integers(0, 6))
    wrap = draw(st.sampled_from([None, 7, 60]))
    lines = []
    for i in range(n):
        seq = draw(st.text(alphabet="ACGTN", max_size=50))
        qual = draw(st.text(alphabet="!#+@I5:", min_size=len(seq), max_size=len(seq)))
        if qual.startswith("@"):
            qual = "I" + qual[1:]
        lines.append(f"@r{i} desc")
        step = wrap or max(len(seq), 1)
        lines += [seq[k : k + step] for k in range(0, len(seq), step)] or []
        lines.append("+" if i % 2 else f"+r{i} desc")
        lines += [qual[k : k + step] for k in range(0, len(qual), step)] or [""]
    return "\n".join(lines) + ("\n" if lines else "")


@settings(max_examples=200, deadline=None)
@given(fastq_files())
def test_well_formed_files_match_biopython(text):
    assert ours(text) == biopython(text)


def test_short_quality_is_reported_and_the_next_record_kept():
    text = "@r1\nACGT\n+\nIIII\n@r2\nACGT\n+\nII\n@r3\nGG\n+\nII\n"
    out = ours(text)
    assert out[0] == ("r1", "ACGT") and out[2] == ("r3", "GG")
    assert out[1] == Malformed(1, "r2", "quality has 2 characters, the sequence 4")


def test_long_quality_is_reported():
    out = ours("@r1\nACGT\n+\nIIIIII\n@r2\nA\n+\nI\n")
    assert isinstance(out[0], Malformed) and "6 characters, the sequence 4" in out[0].reason
    assert out[1] == ("r2", "A")


def test_record_cut_at_end_of_file():
    out = ours("@r1\nACGT\n+\nIIII\n@r2\nACGTACGT\n+\nIII")
    assert out[1] == Malformed(
        1, "r2", "quality has 3 characters, the sequence 8 (record cut at the end of the file)"
    )
    out = ours("@r1\nACGT\n+\nIIII\n@r2\nACG")
    assert out[1] == Malformed(1, "r2", "the file ends before the '+' line (record cut)")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("@r1\nACGT\n+r9\nIIII\n", "'+' line names 'r9'"),
        ("@r1\nAC GT\n+\nIIIII\n", "whitespace inside the sequence"),
        ("junk\n@r1\nA\n+\nI\n", "expected a '@' header line"),
        ("@r1\nACGT\n+\nII\x7fI\n", "quality character '\\x7f' at position 2 (0-based)"),
        ("@r1\nACGT\n+\nIIéI\n", "quality character 'é' at position 2"),
    ],
)
def test_other_malformations(text, reason):
    out = ours(text)
    assert isinstance(out[0], Malformed) and reason in out[0].reason


@pytest.mark.parametrize("bad", ["\x7f", "\x1f", "é", "\x00"])
def test_quality_outside_phred33_is_malformed_as_biopython_says(bad):
    """Biopython's FASTQ parser refuses such a record; ours names it (and keeps the rest)."""
    from Bio import SeqIO

    text = f"@r1\nACGT\n+\nII{bad}I\n@r2\nAC\n+\nII\n"
    with pytest.raises(ValueError):
        list(SeqIO.parse(io.StringIO(text), "fastq"))
    out = ours(text)
    assert isinstance(out[0], Malformed) and "outside '!'..'~'" in out[0].reason
    assert out[1] == ("r2", "AC")
