"""Variants end to end: a bgzip VCF, an indexed reference on a real S3 endpoint (moto), real
Ray and the real vLLM (CPU) engine, checked against Hugging Face on windows built here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pysam
import pytest

from pipeline.cli import main
from pipeline.embed.reference import HFReferenceEmbedder
from pipeline.load.__main__ import summarize
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import run
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from tests.conftest import assert_declared_schema, compose_config
from tests.reference_fixtures import write_fasta

pytestmark = pytest.mark.slow

SIZE = 1000


def vcf_text(a: str, b: str) -> str:
    """Records at real positions of the cut reference (POS 1-based, REF read from it)."""
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}
    rows = [
        ("chrA", 5, "del5", a[4:7], a[4]),  # deletion near the contig start
        ("chrA", 3000, "snv", a[2999], other[a[2999]]),
        ("chrA", 7000, "multi", a[6999], ",".join(x for x in "ACGT" if x != a[6999])),
        ("chrA", 8000, "sv", a[7999], "<DEL>"),
        ("chrA", 9000, "badref", other[a[8999]], a[8999]),
        ("chrA", 11990, "ins", a[11989], a[11989] + "GG"),  # insertion near the end
        ("chrB", 2500, "mnv", b[2499:2501].upper(), "TT"),
        ("chrZ", 10, "nowhere", "A", "G"),
    ]
    header = [
        "##fileformat=VCFv4.2",
        *(f"##contig=<ID={c}>" for c in ("chrA", "chrB", "chrC", "chrZ")),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    return "\n".join(header + ["\t".join(map(str, r)) + "\t.\t.\t." for r in rows]) + "\n"


@pytest.fixture(scope="module")
def variants_run(ray_session, reference, tmp_path_factory, s3_endpoint):
    import s3fs

    _, contigs = reference
    d = tmp_path_factory.mktemp("variants")
    plain = d / "calls.vcf"
    plain.write_text(vcf_text(contigs["chrA"], contigs["chrB"]))
    vcf = d / "calls.vcf.gz"
    pysam.tabix_compress(str(plain), str(vcf), force=True)
    # A bgzip reference on S3 with no index yet: the run builds .fai and .gzi there.
    fa = write_fasta(d / "ref.fa", contigs)
    pysam.tabix_compress(str(fa), str(d / "ref.fa.gz"), force=True)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    fs.mkdir("refs-variants")
    fs.put(str(d / "ref.fa.gz"), "refs-variants/hg/ref.fa.gz")
    args = [
        "model=tiny",
        "input.reference=s3://refs-variants/hg/ref.fa.gz",
        f"input.variants={vcf}",
        f"storage.s3.endpoint_url={s3_endpoint}",
        f"output={d / 'out'}",
        f"window.size={SIZE}",
        "input.on_error=skip",
        "variants.keep_embeddings=true",
        "embed.per_token=true",
    ]
    lines: list[str] = []
    run(compose_config(*args), echo=lines.append)
    fs.invalidate_cache()
    return d / "out", lines, fs.ls("refs-variants/hg"), args


def test_variant_scores_match_hf_on_windows_built_here(variants_run, reference, tiny_model):
    out, _, listing, _ = variants_run
    assert sorted(p.rsplit("/", 1)[1] for p in listing) == [
        "ref.fa.gz",
        "ref.fa.gz.fai",
        "ref.fa.gz.gzi",
    ]
    _, contigs = reference
    a, b = contigs["chrA"], contigs["chrB"].upper()
    t = load_embeddings(str(out), sort=True)
    rows = t.to_pylist()
    got = {(r["id"], r["alt"]): r for r in rows}
    multi = [x for x in "ACGT" if x != a[6999]]
    assert sorted(got) == sorted(
        [("del5", a[4]), ("snv", {"A": "C", "C": "G", "G": "T", "T": "A"}[a[2999]])]
        + [("multi", x) for x in multi]
        + [("ins", a[11989] + "GG"), ("mnv", "TT")]
    )
    # Windows written by hand from the rule: start = POS - 1 - 500, shifted into the contig.
    windows = {
        "del5": (0, 1000, a[:1000], a[:4] + a[4] + a[7:1002]),
        "snv": (2499, 3499, a[2499:3499], None),
        "multi": (6499, 7499, a[6499:7499], None),
        "ins": (11000, 12000, a[11000:12000], (a[11000:11990] + "GG" + a[11990:])[:1000]),
        "mnv": (1999, 2999, b[1999:2999], b[1999:2499] + "TT" + b[2501:2999]),
    }
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    for (ident, alt), r in got.items():
        start, end, ref_seq, alt_seq = windows[ident]
        if alt_seq is None:  # an SNV: the base at POS replaced
            k = r["pos"] - 1 - start
            alt_seq = ref_seq[:k] + alt + ref_seq[k + 1 :]
        assert (r["start"], r["end"]) == (start, end)
        ids = tok.encode(pa.array([ref_seq, alt_seq], pa.large_string())).to_pylist()
        want_ref, want_alt = hf.embed(ids).astype(np.float64)
        ours_ref = np.asarray(r["embedding_ref"], np.float64)
        ours_alt = np.asarray(r["embedding_alt"], np.float64)
        for ours, want in ((ours_ref, want_ref), (ours_alt, want_alt)):
            assert np.linalg.norm(ours - want) / np.linalg.norm(want) < 1e-5, ident
        # The scores: exactly what float64 gives from the stored embeddings, and close to HF's.
        cos = 1 - ours_ref @ ours_alt / (np.linalg.norm(ours_ref) * np.linalg.norm(ours_alt))
        assert r["embedding_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-15)
        assert r["embedding_l2"] == pytest.approx(np.linalg.norm(ours_ref - ours_alt), rel=1e-9)
        hf_l2 = np.linalg.norm(want_ref - want_alt)
        assert r["embedding_l2"] == pytest.approx(hf_l2, rel=1e-2, abs=1e-5), ident
        assert r["embedding_cosine"] > 0 or ref_seq == alt_seq
        # embed.per_token: both windows, every token, the last layer in float16.
        for suffix, seq_ids in (("ref", ids[0]), ("alt", ids[1])):
            tokens = np.asarray(r[f"tokens_l2_{suffix}"], dtype=np.float32)
            assert tokens.shape == (len(seq_ids), 256)
            assert np.allclose(
                tokens.mean(axis=0), want_ref if suffix == "ref" else want_alt, atol=1e-2
            )


def test_variant_manifest_skips_and_shared_windows(variants_run):
    out, lines, _, args = variants_run
    assert_declared_schema(compose_config(*args), out)
    m = read_manifest(str(out))
    assert m["input"] == "variants"
    assert [s["column"] for s in m["scores"]] == ["embedding_cosine", "embedding_l2"]
    assert [e["column"] for e in m["embeddings"]] == ["embedding_ref", "embedding_alt"]
    assert "1-based" in m["coordinates"]
    reasons = {s["id"]: s["reason"] for s in m["skipped_records"]}
    assert set(reasons) == {"sv", "badref", "nowhere"}
    assert "symbolic" in reasons["sv"] and "does not match" in reasons["badref"]
    assert "not in the reference" in reasons["nowhere"]
    c = m["counts"]
    assert c["windows"] == 7 and c["records_skipped"] == 3
    # The three ALTs at POS 7000 share their reference window: embedded once, not three times.
    assert c["engine_requests"] == 12 and c["engine_requests_shared"] == 2
    assert any("embedding -> embedding_cosine, embedding_l2" in line for line in lines)
    text = summarize(str(out))
    assert "embedding_cosine: min" in text and "first rows (pos 1-based" in text
    assert "skipped chrA:8000" in text and "symbolic allele <DEL>" in text


def test_a_ref_mismatch_fails_with_exit_code_2_naming_the_record(
    ray_session, reference, tmp_path, capsys
):
    path, contigs = reference
    a = contigs["chrA"]
    wrong = "A" if a[99] != "A" else "C"
    vcf = tmp_path / "bad.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chrA\t100\trs99\t{wrong}\tG\t.\t.\t.\n"
    )
    code = main(
        [
            "model=tiny",
            f"input.reference={path}",
            f"input.variants={vcf}",
            f"output={tmp_path / 'o'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"record 1 rs99 (chrA:100 {wrong}>G): REF {wrong} does not match" in err
    assert "input.on_error=skip" in err
