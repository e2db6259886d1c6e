"""Zero-shot scores end to end: real Ray, the real vLLM (CPU) engine, the tiny Mixtral at a
trained model's scale (`scoring_model`), on real DNA. Windows are built here by slicing the
contigs (the README's rule), and every score is checked against Hugging Face transformers'
log_softmax(logits) gathered on the next tokens: log P(x_t | x_<t) = logp[t - 1, x_t]."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, InputError
from pipeline.load.__main__ import summarize
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import plan, run
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from tests.conftest import assert_declared_schema, compose_config

SIZE = 255
VOCAB = {"A": 4, "C": 5, "G": 6, "T": 7, "N": 8}
BASES = "ACGT"
OTHER = {"A": "C", "C": "G", "G": "T", "T": "A"}
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
VARIANT_COLUMNS = [
    "chunk_id",
    "source",
    "seq_id",
    "pos",
    "id",
    "ref",
    "alt",
    "start",
    "end",
    "strand",
    "n_tokens",
]


def rc(seq: str) -> str:
    return "".join(COMPLEMENT[c] for c in reversed(seq))


def ids_of(seq: str) -> np.ndarray:
    return np.asarray([VOCAB[c] for c in seq], np.int64)


def common_prefix(x: str, y: str) -> int:
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def records(a: str, b: str) -> list[tuple[str, str, int, str, list[str]]]:
    """(id, contig, POS 1-based, REF read from the contig, ALTs)."""
    b = b.upper()
    return [
        ("snv", "chrA", 3000, a[2999], [OTHER[a[2999]]]),
        ("mnv", "chrA", 4000, a[3999:4001], ["".join(OTHER[c] for c in a[3999:4001])]),
        ("ins", "chrA", 5000, a[4999], [a[4999] + "GT"]),
        ("del", "chrA", 6000, a[5999:6004], [a[5999]]),  # 4 bases deleted after the anchor
        ("multi", "chrA", 7000, a[6999], [x for x in BASES if x != a[6999]]),
        # Near the contig's end: the window is shifted left, the alternate cut short.
        ("del_end", "chrA", 11990, a[11989:11994], [a[11989]]),
        # In chrB's soft-masked (lower-case) stretch.
        ("mnv_soft", "chrB", 1500, b[1499:1501], ["".join(OTHER[c] for c in b[1499:1501])]),
    ]


def write_vcf(path: Path, contigs: dict[str, str]) -> Path:
    lines = [
        "##fileformat=VCFv4.2",
        *(f"##contig=<ID={c}>" for c in contigs),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for ident, contig, pos, ref, alts in records(contigs["chrA"], contigs["chrB"]):
        lines.append(f"{contig}\t{pos}\t{ident}\t{ref}\t{','.join(alts)}\t.\t.\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


def windows(contig: str, pos: int, ref: str, alt: str, before: int) -> tuple[int, str, str]:
    """(start, reference window, alternate window), by slicing: the reference window starts
    `before` bases before the variant, shifted into the contig; the alternate keeps its start,
    REF replaced by ALT, filled from the contig (or cut at its end) to SIZE bases."""
    pos0 = pos - 1
    start = min(max(0, pos0 - before), max(0, len(contig) - SIZE))
    ref_w = contig[start : start + SIZE]
    assert contig[pos0 : pos0 + len(ref)] == ref
    alt_w = (contig[start:pos0] + alt + contig[pos0 + len(ref) :])[:SIZE]
    return start, ref_w, alt_w


class Strand:
    """HF on one window: per token t >= 1, log P(x_t | x_<t) (`next`), the log-probs of A, C,
    G, T (`bases`) and the entropy of the prediction at t; the mean last hidden state."""

    def __init__(self, hf, seq: str):
        logp, self.embedding = hf(seq)
        ids = ids_of(seq)
        self.seq = seq
        self.next = logp[np.arange(len(ids) - 1), ids[1:]]
        self.bases = logp[:-1][:, [VOCAB[c] for c in BASES]]
        self.entropy = -(np.exp(logp) * logp).sum(-1)[:-1]

    def from_token(self, t: int) -> np.ndarray:
        """`next` of tokens t, t + 1, ... (token 0 has no context)."""
        return self.next[max(1, t) - 1 :]


def merged_tokens(fwd: Strand, back: Strand, what: str) -> np.ndarray:
    """Per forward position, the mean of the strands that scored it: the forward window's
    token t is position t; the reverse window's token u is position n - 1 - u, its bases
    complemented. Position 0 is the reverse strand's alone, n - 1 the forward's alone."""
    n = len(fwd.seq)
    f_vals, b_vals = getattr(fwd, what), getattr(back, what)
    shape = (n, *f_vals.shape[1:])
    f = np.full(shape, np.nan)
    b = np.full(shape, np.nan)
    f[1:] = f_vals
    b_fwd = b_vals[::-1]
    if what == "bases":
        b_fwd = b_fwd[:, [BASES.index(COMPLEMENT[x]) for x in BASES]]
    b[: n - 1] = b_fwd
    out = (f + b) / 2
    out[0], out[n - 1] = b[0], f[n - 1]
    return out


@pytest.fixture(scope="module")
def hf(scoring_model):
    """seq -> (HF's [n, vocab] next-token log-probs in float64, mean last hidden state)."""
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(scoring_model, torch_dtype=torch.float32).eval()
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def forward(seq: str) -> tuple[np.ndarray, np.ndarray]:
        if seq not in cache:
            with torch.no_grad():
                out = model(torch.as_tensor(ids_of(seq))[None], output_hidden_states=True)
            logp = torch.log_softmax(out.logits[0].float(), -1).double().numpy()
            cache[seq] = (logp, out.hidden_states[-1][0].double().mean(0).numpy())
        return cache[seq]

    return forward


def test_the_tokenizer_is_one_token_per_base_as_the_expectations_assume(scoring_model):
    tok = DnaTokenizer(TokenizerSpec(scoring_model))
    assert {b: tok.token_id(b) for b in VOCAB} == VOCAB
    assert tok.n_special == 0 and tok.char_level


def model_args(scoring_model: str) -> list[str]:
    return [
        "model=tiny",
        f"model.path={scoring_model}",
        "model.dtype=float32",
        "model.max_model_len=1024",
    ]


def run_once(args: list[str]) -> tuple[Path, list[str], list[dict]]:
    lines: list[str] = []
    run(compose_config(*args), echo=lines.append)
    out = Path(args[-1].split("=", 1)[1])
    return out, lines, load_embeddings(str(out), sort=True).to_pylist()


# ---- 1. variants: scores beside the embeddings, both strands merged ----


@pytest.fixture(scope="module")
def vcf(reference, tmp_path_factory) -> Path:
    _, contigs = reference
    return write_vcf(tmp_path_factory.mktemp("scores-vcf") / "calls.vcf", contigs)


@pytest.fixture(scope="module")
def beside_run(ray_session, reference, vcf, scoring_model, tmp_path_factory):
    path, _ = reference
    args = [
        *model_args(scoring_model),
        f"input.reference={path}",
        f"input.variants={vcf}",
        "scores=[llr,loglik]",
        "scores.per_token=true",
        "window.reverse_complement=merge",
        f"window.size={SIZE}",
        f"output={tmp_path_factory.mktemp('scores-beside') / 'out'}",
    ]
    return (*run_once(args), args)


def expected_rows(reference, before: int) -> dict[tuple[str, str], tuple[str, int, str, str]]:
    """(id, alt) -> (ref, start, reference window, alternate window), built here."""
    _, contigs = reference
    upper = {k: v.upper() for k, v in contigs.items()}
    out = {}
    for ident, contig, pos, ref, alts in records(contigs["chrA"], contigs["chrB"]):
        for alt in alts:
            out[(ident, alt)] = (ref, *windows(upper[contig], pos, ref, alt, before))
    return out


@pytest.mark.slow
def test_variant_scores_beside_embeddings_match_hf_on_both_strands(beside_run, reference, hf):
    _, _, rows, _ = beside_run
    want = expected_rows(reference, SIZE // 2)
    assert sorted((r["id"], r["alt"]) for r in rows) == sorted(want)
    assert list(rows[0]) == [
        *VARIANT_COLUMNS,
        "embedding_cosine",
        "embedding_l2",
        "loglik_sum_ref",
        "loglik_mean_ref",
        "loglik_sum_alt",
        "loglik_mean_alt",
        "llr_sum",
        "llr_mean",
        "llr_site",
        "logp_ref",
        "logp_bases_ref",
        "entropy_ref",
        "logp_alt",
        "logp_bases_alt",
        "entropy_alt",
    ]
    for r in rows:
        ref, start, ref_w, alt_w = want[(r["id"], r["alt"])]
        what = f"{r['id']} {r['ref']}>{r['alt']}"
        assert (r["ref"], r["start"], r["end"], r["strand"]) == (ref, start, start + SIZE, "+")
        fr, fa = Strand(hf, ref_w), Strand(hf, alt_w)
        br, ba = Strand(hf, rc(ref_w)), Strand(hf, rc(alt_w))
        # Log-likelihood ratio of the whole windows, alternate minus reference, strands
        # averaged; its mean: over each strand's tokens from its fork.
        llr = [a.next.sum() - b.next.sum() for a, b in ((fa, fr), (ba, br))]
        assert abs(r["llr_sum"] - np.mean(llr)) < 1e-3, (what, r["llr_sum"], llr)
        means = []
        for a, b in ((fa, fr), (ba, br)):
            fork = common_prefix(a.seq, b.seq)
            means.append(a.from_token(fork).mean() - b.from_token(fork).mean())
        assert abs(r["llr_mean"] - np.mean(means)) < 1e-4, what
        for allele, f, b in (("ref", fr, br), ("alt", fa, ba)):
            total = np.mean([f.next.sum(), b.next.sum()])
            mean = np.mean([f.next.sum() / (len(f.seq) - 1), b.next.sum() / (len(b.seq) - 1)])
            assert abs(r[f"loglik_sum_{allele}"] - total) < 1e-3, (what, allele)
            assert abs(r[f"loglik_mean_{allele}"] - mean) < 1e-5, (what, allele)
            # Per token, in forward order, over the whole window.
            n = len(f.seq)
            for column, attr in (("logp", "next"), ("logp_bases", "bases"), ("entropy", "entropy")):
                got = np.asarray(r[f"{column}_{allele}"], np.float64)
                assert got.shape == ((n, 4) if attr == "bases" else (n,)), (what, column)
                assert np.isfinite(got).all(), (what, column)
                np.testing.assert_allclose(
                    got, merged_tokens(f, b, attr), atol=1e-4, rtol=0, err_msg=f"{what} {column}"
                )
        # The SNV's site term: the reference window's prediction at the variant, both strands.
        if len(r["ref"]) == 1 and len(r["alt"]) == 1:
            p = r["pos"] - 1 - start
            q = SIZE - 1 - p
            i, j = BASES.index(r["alt"]), BASES.index(r["ref"])
            ci, cj = BASES.index(COMPLEMENT[r["alt"]]), BASES.index(COMPLEMENT[r["ref"]])
            fwd = fr.bases[p - 1, i] - fr.bases[p - 1, j]
            back = br.bases[q - 1, ci] - br.bases[q - 1, cj]
            site = (fwd + back) / 2
            assert r["llr_site"] is not None and abs(r["llr_site"] - site) < 1e-4, what
        else:
            assert r["llr_site"] is None, what
        # The embeddings still come beside the scores: both strands averaged, then compared.
        e_ref = (fr.embedding + br.embedding) / 2
        e_alt = (fa.embedding + ba.embedding) / 2
        l2 = np.linalg.norm(e_ref - e_alt)
        cos = 1 - e_ref @ e_alt / (np.linalg.norm(e_ref) * np.linalg.norm(e_alt))
        assert r["embedding_l2"] == pytest.approx(l2, rel=1e-2, abs=1e-5), what
        assert r["embedding_cosine"] == pytest.approx(cos, rel=5e-2, abs=1e-6), what
    # Real values: the variants score differently, and none is zero.
    llrs = [r["llr_sum"] for r in rows]
    assert len(set(np.round(llrs, 6))) == len(llrs) and all(v != 0 for v in llrs)


@pytest.mark.slow
def test_variant_scores_manifest_schema_and_summary(beside_run):
    out, lines, _, args = beside_run
    assert_declared_schema(compose_config(*args), out)
    m = read_manifest(str(out))
    assert m["input"] == "variants"
    assert [e["column"] for e in m["embeddings"]] == []
    model = [
        {"column": c, "score": s, "statistic": st} | ({"allele": al} if al else {})
        for c, s, st, al in [
            ("loglik_sum_ref", "loglik", "sum", "ref"),
            ("loglik_mean_ref", "loglik", "mean", "ref"),
            ("loglik_sum_alt", "loglik", "sum", "alt"),
            ("loglik_mean_alt", "loglik", "mean", "alt"),
            ("llr_sum", "llr", "sum", ""),
            ("llr_mean", "llr", "mean", ""),
            ("llr_site", "llr", "site", ""),
            ("logp_ref", "per_token", "logp", "ref"),
            ("logp_bases_ref", "per_token", "logp_bases", "ref"),
            ("entropy_ref", "per_token", "entropy", "ref"),
            ("logp_alt", "per_token", "logp", "alt"),
            ("logp_bases_alt", "per_token", "logp_bases", "alt"),
            ("entropy_alt", "per_token", "entropy", "alt"),
        ]
    ]
    assert m["scores"] == [
        {"column": "embedding_cosine", "embedding": "embedding", "metric": "cosine"},
        {"column": "embedding_l2", "embedding": "embedding", "metric": "l2"},
        *model,
    ]
    c = m["counts"]
    assert c["windows"] == 9 and c["records_skipped"] == 0
    # Every token computed: an engine pooling embeddings caches no prefix.
    assert c["engine_tokens_computed"] == c["engine_tokens"] > 0
    text = summarize(str(out))
    assert re.search(r"llr_sum: min -?\d", text), text
    # Five of the nine rows are not SNVs: their llr_site is null.
    assert re.search(r"llr_site: min .* \(5 missing\)", text), text
    assert any("llr_sum" in line for line in lines)


# ---- 2. variants: scores alone, the shared left flank ----


@pytest.fixture(scope="module")
def alone_run(ray_session, reference, vcf, scoring_model, tmp_path_factory):
    path, _ = reference
    args = [
        *model_args(scoring_model),
        f"input.reference={path}",
        f"input.variants={vcf}",
        "scores=[llr]",
        "embed.layers=[]",
        "variants.layout=end",
        "variants.end_bases=31",
        f"window.size={SIZE}",
        f"output={tmp_path_factory.mktemp('scores-alone') / 'out'}",
    ]
    return (*run_once(args), args)


@pytest.mark.slow
def test_variant_scores_alone_share_the_left_flank_and_match_hf(
    alone_run, beside_run, reference, hf
):
    out, _, rows, args = alone_run
    want = expected_rows(reference, SIZE - 31)
    assert sorted((r["id"], r["alt"]) for r in rows) == sorted(want)
    assert list(rows[0]) == [*VARIANT_COLUMNS, "llr_sum", "llr_mean", "llr_site"]
    for r in rows:
        ref, start, ref_w, alt_w = want[(r["id"], r["alt"])]
        what = f"{r['id']} {r['ref']}>{r['alt']}"
        assert (r["ref"], r["start"], r["end"]) == (ref, start, start + SIZE), what
        if r["id"] != "del_end":  # the end layout: 31 bases from the variant's first base
            assert r["end"] - (r["pos"] - 1) == 31, what
        fr, fa = Strand(hf, ref_w), Strand(hf, alt_w)
        llr = fa.next.sum() - fr.next.sum()
        assert abs(r["llr_sum"] - llr) < 1e-3, (what, r["llr_sum"], llr)
        fork = common_prefix(ref_w, alt_w)
        mean = fa.from_token(fork).mean() - fr.from_token(fork).mean()
        assert abs(r["llr_mean"] - mean) < 1e-4, what
        if len(r["ref"]) == len(r["alt"]) == 1:
            p = r["pos"] - 1 - start
            i, j = BASES.index(r["alt"]), BASES.index(r["ref"])
            assert abs(r["llr_site"] - (fr.bases[p - 1, i] - fr.bases[p - 1, j])) < 1e-4, what
        else:
            assert r["llr_site"] is None, what
    assert_declared_schema(compose_config(*args), out)
    m = read_manifest(str(out))
    assert m["embeddings"] == []
    assert [s["column"] for s in m["scores"]] == ["llr_sum", "llr_mean", "llr_site"]
    c = m["counts"]
    # The alternates reused their reference's cached prefix (224 shared bases each).
    assert 0 < c["engine_tokens_computed"] < c["engine_tokens"], c
    assert c["engine_tokens_computed"] <= c["engine_tokens"] - 100, c
    assert m["fingerprint"] != read_manifest(str(beside_run[0]))["fingerprint"]


# ---- 3. mutagenesis ----

INTERVAL = (3000, 3012)  # chrA, 0-based half-open: 12 bases


@pytest.fixture(scope="module")
def mutagenesis_run(ray_session, reference, scoring_model, tmp_path_factory):
    path, _ = reference
    d = tmp_path_factory.mktemp("scores-mutagenesis")
    bed = d / "sites.bed"
    bed.write_text(f"chrA\t{INTERVAL[0]}\t{INTERVAL[1]}\tsite1\n")
    args = [
        *model_args(scoring_model),
        f"input.reference={path}",
        f"input.mutagenesis={bed}",
        f"window.size={SIZE}",
        "variants.layout=end",
        f"output={d / 'out'}",
    ]
    return (*run_once(args), args)


@pytest.mark.slow
def test_mutagenesis_rows_match_hf_and_summaries_their_alternates(mutagenesis_run, reference, hf):
    out, _, rows, args = mutagenesis_run
    _, contigs = reference
    a = contigs["chrA"]
    lo, hi = INTERVAL
    assert len(rows) == 4 * (hi - lo)
    assert list(rows[0]) == [
        *VARIANT_COLUMNS,
        "llr_sum",
        "llr_mean",
        "llr_site",
        "worst_alt",
        "worst_llr_sum",
    ]
    by_pos: dict[int, dict] = {}
    for r in rows:
        by_pos.setdefault(r["pos"], {})[r["alt"]] = r
    assert sorted(by_pos) == list(range(lo + 1, hi + 1))
    before = SIZE - 32  # variants.end_bases: 32 by default
    for pos, alleles in by_pos.items():
        ref = a[pos - 1]
        assert sorted(alleles, key=str) == sorted([*(b for b in BASES if b != ref), None], key=str)
        for r in alleles.values():
            assert (r["ref"], r["id"], r["strand"]) == (ref, "site1", "+")
            assert (r["start"], r["end"]) == (pos - 1 - before, pos - 1 - before + SIZE)
        alts = {b: r for b, r in alleles.items() if b is not None}
        summary = alleles[None]
        for key in ("llr_sum", "llr_mean", "llr_site"):
            want = np.mean([r[key] for r in alts.values()])
            assert summary[key] == pytest.approx(want, rel=1e-12, abs=1e-12), (pos, key)
        worst = min(alts, key=lambda b: alts[b]["llr_sum"])
        assert (summary["worst_alt"], summary["worst_llr_sum"]) == (worst, alts[worst]["llr_sum"])
        assert all(r["worst_alt"] is None and r["worst_llr_sum"] is None for r in alts.values())
    # A sample of alternates against HF: the end-layout window, the base replaced.
    for pos, k in ((lo + 1, 0), (lo + 4, 1), (lo + 8, 2), (hi, 1)):
        ref = a[pos - 1]
        alt = [b for b in BASES if b != ref][k]
        r = by_pos[pos][alt]
        start = pos - 1 - before
        ref_w = a[start : start + SIZE]
        p = pos - 1 - start
        alt_w = ref_w[:p] + alt + ref_w[p + 1 :]
        fr, fa = Strand(hf, ref_w), Strand(hf, alt_w)
        llr = fa.next.sum() - fr.next.sum()
        assert abs(r["llr_sum"] - llr) < 1e-3, (pos, alt, r["llr_sum"], llr)
        mean = fa.from_token(p).mean() - fr.from_token(p).mean()
        assert abs(r["llr_mean"] - mean) < 1e-4, (pos, alt)
        site = fr.bases[p - 1, BASES.index(alt)] - fr.bases[p - 1, BASES.index(ref)]
        assert abs(r["llr_site"] - site) < 1e-4, (pos, alt)
    assert_declared_schema(compose_config(*args), out)
    m = read_manifest(str(out))
    assert m["input"] == "mutagenesis" and m["embeddings"] == []
    assert [(s["column"], s["score"], s["statistic"]) for s in m["scores"]] == [
        ("llr_sum", "llr", "sum"),
        ("llr_mean", "llr", "mean"),
        ("llr_site", "llr", "site"),
        ("worst_alt", "llr", "worst_alt"),
        ("worst_llr_sum", "llr", "worst_sum"),
    ]


def test_a_mutagenesis_interval_over_max_bases_fails_before_any_engine(reference, tmp_path):
    path, _ = reference
    bed = tmp_path / "long.bed"
    bed.write_text("chrA\t100\t105\tshort\nchrA\t200\t211\tlong\n")
    out = tmp_path / "out"
    cfg = compose_config(
        "model=tiny",
        f"input.reference={path}",
        f"input.mutagenesis={bed}",
        "mutagenesis.max_bases=10",
        f"output={out}",
    )
    with pytest.raises(ConfigError) as e:
        run(cfg, echo=lambda _: None)
    msg = str(e.value)
    assert str(bed) in msg, msg
    assert "interval 1 (chrA:200-211, 0-based) has 11 bases" in msg, msg
    assert "mutagenesis.max_bases=10" in msg, msg
    assert not out.exists()  # nothing claimed, no engine, no Ray


# ---- 4. refusals, before any engine ----


@pytest.fixture
def fasta(reference, tmp_path) -> Path:
    _, contigs = reference
    p = tmp_path / "reads.fa"
    p.write_text(f">r1\n{contigs['chrA'][:300]}\n")
    return p


@pytest.mark.parametrize(
    "extra, match",
    [
        (["scores=[llr]"], r"scores=\[llr\] applies to input.variants and input.mutagenesis"),
        (["scores=[loglik]", "scores.per_token=true"], "scores.per_token applies to"),
        (["embed.layers=[]"], r"embed.layers=\[\] computes no embeddings: ask for scores too"),
    ],
)
def test_scores_that_do_not_apply_to_tiles_are_refused(fasta, tmp_path, extra, match):
    cfg = compose_config("model=tiny", f"input={fasta}", f"output={tmp_path / 'o'}", *extra)
    with pytest.raises(ConfigError, match=match):
        plan(cfg)


def copy_model(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def variants_args(reference, vcf, tmp_path) -> list[str]:
    path, _ = reference
    return [
        "model=tiny",
        f"input.reference={path}",
        f"input.variants={vcf}",
        "scores=[llr]",
        f"output={tmp_path / 'o'}",
    ]


def test_scores_on_a_model_that_is_not_causal_are_refused(scoring_model, variants_args, tmp_path):
    model = copy_model(scoring_model, tmp_path / "bert")
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as e:
        plan(compose_config(*variants_args, f"model.path={model}"))
    msg = str(e.value)
    assert "causal" in msg and "BertModel" in msg and str(model) in msg, msg


def test_scores_on_a_model_without_lm_head_weights_are_refused(
    scoring_model, variants_args, tmp_path
):
    from safetensors.torch import load_file, save_file

    model = copy_model(scoring_model, tmp_path / "headless")
    weights = load_file(str(model / "model.safetensors"))
    assert "lm_head.weight" in weights
    del weights["lm_head.weight"]
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError) as e:
        plan(compose_config(*variants_args, f"model.path={model}"))
    msg = str(e.value)
    assert "lm_head.weight" in msg and str(model) in msg, msg
    # The same model with its head plans (the refusal is the missing head, nothing else).
    plan(compose_config(*variants_args, f"model.path={scoring_model}"))


def test_scores_with_a_tokenizer_adding_special_tokens_are_refused(
    scoring_model, variants_args, tmp_path
):
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    # The tiny tokenizer adds nothing even when asked: give it [BOS] ... [EOS].
    model = copy_model(scoring_model, tmp_path / "bos")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.post_processor = TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    tok.save(str(model / "tokenizer.json"))
    args = [*variants_args, f"model.path={model}"]
    assert DnaTokenizer(TokenizerSpec(str(model), add_special_tokens=True)).n_special == 2
    with pytest.raises(ConfigError) as e:
        plan(compose_config(*args, "model.add_special_tokens=true"))
    msg = str(e.value)
    assert "one token per base and no special tokens" in msg and str(model) in msg, msg
    assert "model.add_special_tokens=True" in msg, msg
    # Without the special tokens the same model scores.
    plan(compose_config(*args))


def test_scores_on_a_wrong_ref_fail_naming_the_record(
    scoring_model, reference, variants_args, tmp_path
):
    _, contigs = reference
    a = contigs["chrA"]
    wrong = OTHER[a[99]]
    vcf = tmp_path / "bad.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        f"chrA\t100\trs99\t{wrong}\t{a[99]}\t.\t.\t.\n"
    )
    args = [x for x in variants_args if not x.startswith("input.variants=")]
    cfg = compose_config(
        *args, f"input.variants={vcf}", f"model.path={scoring_model}", "input.on_error=error"
    )
    with pytest.raises(InputError) as e:
        plan(cfg)
    msg = str(e.value)
    assert f"record 1 rs99 (chrA:100 {wrong}>{a[99]}): REF {wrong} does not match" in msg, msg
