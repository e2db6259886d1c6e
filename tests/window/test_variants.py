"""VariantWindowStage on a real reference: the window rule, REF checks, contig ends."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import InputConfig, OnError, WindowConfig
from pipeline.errors import InputError
from pipeline.rows import ALLELE_SCHEMA, SEQUENCE_ALT
from pipeline.stages import StatsSink
from pipeline.window.variants import VariantWindowStage
from pipeline.window.windows import reverse_complement


def alleles(*rows) -> pa.Table:
    """(seq_id, pos, ref, alt) rows as the VCF reader hands them on."""
    return pa.Table.from_pylist(
        [
            {
                "source": "x.vcf",
                "seq_id": s,
                "record_index": i,
                "alt_index": 0,
                "pos": pos,
                "id": f"rs{i}",
                "ref": ref,
                "alt": alt,
            }
            for i, (s, pos, ref, alt) in enumerate(rows)
        ],
        schema=ALLELE_SCHEMA,
    )


def run(reference, table, stats=None, on_error="error", **window):
    path, _ = reference
    stage = VariantWindowStage(
        WindowConfig(**{"size": 1000, **window}),
        "model-key",
        str(path),
        None,
        InputConfig(on_error=OnError(on_error)),
        stats,
    )
    out = list(stage(table))
    return pa.concat_tables(out).to_pylist() if out else []


def test_reference_and_alternate_windows(reference):
    _, contigs = reference
    a = contigs["chrA"]
    b = contigs["chrB"].upper()
    rows = run(
        reference,
        alleles(
            ("chrA", 3000, a[2999], "T" if a[2999] != "T" else "C"),  # SNV, centred
            ("chrA", 5, a[4:7], a[4]),  # deletion near the contig start: window shifted to 0
            ("chrA", 11990, a[11989], a[11989] + "GG"),  # insertion near the end
            ("chrB", 2500, b[2499:2501], "TT"),  # MNV on soft-masked sequence
        ),
    )
    snv, dele, ins, mnv = rows
    assert (snv["start"], snv["end"]) == (2499, 3499)
    assert snv["sequence"] == a[2499:3499]
    assert snv[SEQUENCE_ALT] == a[2499:2999] + snv["alt"] + a[3000:3499]
    assert (dele["start"], dele["end"]) == (0, 1000)
    # Two bases deleted: the alternate window is filled from the contig to 1000 bases.
    assert dele[SEQUENCE_ALT] == a[:4] + a[4] + a[7:1002]
    assert (ins["start"], ins["end"]) == (11000, 12000)
    # Two bases inserted at the contig's end: the window is cut at 1000.
    assert ins[SEQUENCE_ALT] == (a[11000:11990] + "GG" + a[11990:])[:1000]
    assert (
        mnv["sequence"] == b[1999:2999] and mnv[SEQUENCE_ALT] == b[1999:2499] + "TT" + b[2501:2999]
    )
    assert all(len(r[SEQUENCE_ALT]) == 1000 for r in rows)
    assert [r["pos"] for r in rows] == [3000, 5, 11990, 2500]  # 1-based, as in the VCF


def test_strands(reference):
    _, contigs = reference
    a = contigs["chrA"]
    plus, minus = run(reference, alleles(("chrA", 3000, a[2999], "N")), reverse_complement=True)
    assert minus["sequence"] == reverse_complement(plus["sequence"])
    assert minus[SEQUENCE_ALT] == reverse_complement(plus[SEQUENCE_ALT])
    (merged,) = run(reference, alleles(("chrA", 3000, a[2999], "N")), reverse_complement="merge")
    assert merged["sequence_alt_rc"] == reverse_complement(merged[SEQUENCE_ALT])


def test_ref_mismatch_and_unknown_contig(reference):
    _, contigs = reference
    a = contigs["chrA"]
    wrong = "A" if a[99] != "A" else "C"
    with pytest.raises(
        InputError,
        match=rf"x.vcf: record 1 rs0 \(chrA:100 {wrong}>G\): REF "
        rf"{wrong} does not match the reference, which has {a[99]} there",
    ):
        run(reference, alleles(("chrA", 100, wrong, "G")))
    with pytest.raises(InputError, match="'chr9' is not in the reference"):
        run(reference, alleles(("chr9", 100, "A", "G")))
    with pytest.raises(InputError, match="runs past the end of chrC"):
        run(reference, alleles(("chrC", 1, "AC", "G")))
    stats = StatsSink()
    rows = run(
        reference,
        alleles(("chrA", 100, wrong, "G"), ("chr9", 1, "A", "G"), ("chrA", 100, a[99], "N")),
        stats,
        on_error="skip",
    )
    assert [r["pos"] for r in rows] == [100]
    skipped = stats.totals()["skipped"]
    assert [(s["seq_id"], s["pos"], s["id"]) for s in skipped] == [
        ("chrA", 100, "rs0"),
        ("chr9", 1, "rs1"),
    ]
    assert "does not match" in skipped[0]["reason"]
