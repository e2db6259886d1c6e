from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from pathlib import Path

import pysam
import pytest

from pipeline.errors import InputError
from pipeline.read.vcf import SkippedVariant, Variant, iter_variants
from pipeline.storage import s3_options

HEADER = """##fileformat=VCFv4.2
##contig=<ID=chrA,length=12000>
##contig=<ID=chrB,length=17903>
##ALT=<ID=DEL,Description="Deletion">
##ALT=<ID=NON_REF,Description="Any other allele">
##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural variant">
##INFO=<ID=END,Number=1,Type=Integer,Description="End position">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA00001
"""


def other(base: str) -> str:
    return next(b for b in "ACGT" if b != base.upper())


@pytest.fixture(scope="module")
def genome(genome_fasta) -> dict[str, str]:
    """chrA and chrB as cut from real DNA for the reference tests (REF alleles come from it)."""
    g = "".join(line.strip() for line in genome_fasta.read_text().splitlines()[1:])
    return {"chrA": g[:12000], "chrB": g[12000:]}


NOT_DNA = "is not a DNA sequence (A, C, G, T, N)"
STAR = "spanning deletion allele * (the position is deleted by another variant)"


def ok(alt_index: int, alt: str) -> tuple:
    return (Variant, alt_index, alt)


def skip(alt_index: int | None, alt: str | None, reason: str) -> tuple:
    return (SkippedVariant, alt_index, alt, reason)


@pytest.fixture(scope="module")
def cases(genome) -> tuple[str, list[Variant | SkippedVariant]]:
    """(VCF text, what iter_variants must yield for it)."""
    a, b = genome["chrA"], genome["chrB"]
    lines, expected = [], []

    def rec(chrom, pos, vid, ref, alt, *items):
        n = len(lines)
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t50\tPASS\t.\tGT\t0/1")
        vid = None if vid == "." else vid
        for cls, i, allele, *reason in items:
            if cls is Variant:
                expected.append(Variant(n, i, chrom, pos, vid, ref.upper(), allele.upper()))
            else:
                expected.append(SkippedVariant(n, i, chrom, pos, vid, ref, allele, *reason))

    snv = other(a[99])
    rec("chrA", 100, "rs1", a[99], snv, ok(0, snv))
    mnv = "".join(other(c) for c in a[199:202])
    rec("chrA", 200, ".", a[199:202], mnv, ok(0, mnv))
    rec("chrA", 300, ".", a[299], a[299] + "GATTACA", ok(0, a[299] + "GATTACA"))
    rec("chrA", 400, "rs2;rs3", a[399:405], a[399], ok(0, a[399]))
    same = a[499]
    rec("chrA", 500, ".", same, same, skip(0, same, f"ALT allele {same} equals REF: no change"))
    rec("chrA", 11999, ".", a[11998:12000], "N", ok(0, "N"))  # the contig's last bases
    # Multi-allelic, one ALT lower-case: one item per ALT, in ALT order.
    x, y = [c for c in "ACGT" if c != b[999]][:2]
    alts = f"{x},{y.lower()},{b[999]}TT"
    rec("chrB", 1000, "ms1", b[999], alts, ok(0, x), ok(1, y), ok(2, b[999] + "TT"))
    rec("chrB", 2000, ".", b[1999], "<DEL>", skip(0, "<DEL>", "symbolic allele <DEL>"))
    bnd = f"{b[2999]}]chrB:100]"
    rec("chrB", 3000, ".", b[2999], bnd, skip(0, bnd, f"breakend {bnd}"))
    single = f".{b[3099]}"
    rec("chrB", 3100, ".", b[3099], single, skip(0, single, f"single breakend {single}"))
    snv = other(b[3999])
    rec("chrB", 4000, ".", b[3999], f"{snv},*", ok(0, snv), skip(1, "*", STAR))
    rec("chrB", 5000, "rs9", b[4999], ".", skip(None, None, "no ALT allele"))
    snv = other(b[5999])
    non_ref = skip(1, "<NON_REF>", "symbolic allele <NON_REF>")
    rec("chrB", 6000, ".", b[5999], f"{snv},<NON_REF>", ok(0, snv), non_ref)
    rec("chrB", 7000, ".", "R", "A", skip(0, "A", f"REF allele R {NOT_DNA}"))
    rec("chrB", 7100, ".", b[7099], "Y", skip(0, "Y", f"ALT allele Y {NOT_DNA}"))
    return HEADER + "\n".join(lines) + "\n", expected


@pytest.fixture
def vcf(tmp_path, cases) -> Path:
    path = tmp_path / "calls.vcf"
    path.write_text(cases[0])
    return path


@pytest.fixture
def vcf_gz(tmp_path, vcf) -> Path:
    path = tmp_path / "calls.vcf.gz"
    pysam.tabix_compress(str(vcf), str(path), force=True)
    return path


def test_plain_vcf(vcf, cases):
    assert list(iter_variants(str(vcf))) == cases[1]


def test_bgzip_vcf_reads_the_same(vcf_gz, cases):
    assert list(iter_variants(str(vcf_gz))) == cases[1]


def by_record(items) -> list[tuple]:
    """(chrom, pos, id, REF, ALTs) per record, rebuilt from what iter_variants yields."""
    records: dict[int, list] = defaultdict(list)
    heads = {}
    for it in items:
        heads[it.record] = (it.seq_id, it.pos, it.id, it.ref.upper())
        if it.alt_index is not None:
            assert it.alt_index == len(records[it.record])  # ALT order, none left out
            records[it.record].append(it.alt.upper())
    assert sorted(heads) == list(range(len(heads)))
    return [(*heads[n], tuple(records[n])) for n in sorted(heads)]


@pytest.mark.parametrize("kind", ["vcf", "vcf_gz"])
def test_agrees_with_pysam(kind, request):
    path = request.getfixturevalue(kind)
    with pysam.VariantFile(str(path)) as f:
        theirs = [
            (r.chrom, r.pos, r.id, r.ref.upper(), tuple(a.upper() for a in r.alts or ())) for r in f
        ]
    assert by_record(iter_variants(str(path))) == theirs
    assert len(theirs) == 15


def test_s3_vcf(s3, s3_endpoint, vcf_gz, cases, tmp_path, monkeypatch):
    key = f"in-{s3.name}/calls/calls.vcf.gz"
    s3.put(str(vcf_gz), key)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    opts = {"s3": s3_options(endpoint_url=s3_endpoint)}
    assert list(iter_variants(f"s3://{key}", opts)) == cases[1]
    assert list(scratch.iterdir()) == []  # the local copy is gone
    with pytest.raises(InputError, match="VCF not found: s3://"):
        list(iter_variants(f"s3://in-{s3.name}/nope.vcf", opts))


def test_records_without_samples(tmp_path):
    path = tmp_path / "sites.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "chrA\t5\t.\tacg\ta\t.\t.\t.\n"
    )
    assert list(iter_variants(str(path))) == [Variant(0, 0, "chrA", 5, None, "ACG", "A")]


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="VCF not found: .*nope.vcf"):
        list(iter_variants(str(tmp_path / "nope.vcf")))


@pytest.mark.parametrize(
    "content",
    [b"this is not a VCF\nat all\n", b"", b"\x1f\x8b\x08\x00garbage"],
)
def test_not_a_vcf(tmp_path, content):
    path = tmp_path / "broken.vcf"
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(f"cannot read VCF {path}")):
        list(iter_variants(str(path)))


def test_bad_record_names_file_and_line(tmp_path, vcf, cases):
    path = tmp_path / "bad.vcf"
    text = cases[0].splitlines()
    text.insert(len(HEADER.splitlines()) + 2, "chrA\tnot-a-number\t.\tA\tC\t.\t.\t.\tGT\t0/1")
    path.write_text("\n".join(text) + "\n")
    it = iter_variants(str(path))
    assert [next(it) for _ in range(2)] == cases[1][:2]  # the records before it come first
    with pytest.raises(InputError, match=re.escape(f"{path}: cannot parse VCF data line 3")):
        list(it)


def test_truncated_bgzip(tmp_path, vcf_gz):
    path = tmp_path / "cut.vcf.gz"
    data = vcf_gz.read_bytes()
    path.write_bytes(data[: len(data) - 60])
    with pytest.raises(InputError, match=re.escape(str(path))):
        list(iter_variants(str(path)))
