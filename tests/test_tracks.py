"""Per-base tracks end to end: real Ray, the real vLLM (CPU) engine, the tiny Mixtral at a
trained model's scale (`scoring_model`), on real DNA (SARS-CoV-2, and contigs cut from it
with N runs). Every base's value is checked against Hugging Face transformers' log_softmax
over the same window, built here from the rule in the README: windows of window.size every
size - context bases; the forward strand scores a window from where the previous one ended,
the reverse strand up to where the next one starts."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from pipeline.errors import ConfigError, InputError
from pipeline.load.loader import read_manifest
from pipeline.load.tracks import load_track
from pipeline.run import run
from tests.conftest import compose_config

SIZE = 512
CONTEXT = 128
STEP = SIZE - CONTEXT
VOCAB = {"A": 4, "C": 5, "G": 6, "T": 7, "N": 8}
ACGT = [VOCAB[b] for b in "ACGT"]
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def rc(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def model_args(scoring_model: str) -> list[str]:
    return [
        "model=tiny",
        f"model.path={scoring_model}",
        "model.dtype=float32",
        "model.max_model_len=1024",
        f"window.size={SIZE}",
        f"tracks.context={CONTEXT}",
    ]


@pytest.fixture(scope="module")
def hf(scoring_model):
    """seq -> HF's [n, vocab] next-token log-probs (float64)."""
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(scoring_model, torch_dtype=torch.float32).eval()

    def forward(seq: str) -> np.ndarray:
        ids = torch.as_tensor([VOCAB[c] for c in seq])[None]
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        return torch.log_softmax(logits, -1).double().numpy()

    return forward


def expected(contig: str, hf) -> dict[str, dict[str, np.ndarray]]:
    """Per strand, per value, the whole contig's expected track (NaN: a gap), from windows
    built here."""
    n = len(contig)
    out = {s: {v: np.full(n, np.nan) for v in ("logp", "entropy")} for s in "+-"}
    for s in "+-":
        out[s]["probs"] = np.full((n, 4), np.nan)
    starts = [0]
    while starts[-1] + SIZE < n:
        starts.append(starts[-1] + STEP)
    for k, a in enumerate(starts):
        b = min(a + SIZE, n)
        last = k == len(starts) - 1
        for strand, (lo, hi) in (
            ("+", (a + CONTEXT if a else 0, b)),
            ("-", (a, b if last else a + STEP)),
        ):
            seq = contig[a:b] if strand == "+" else rc(contig[a:b])
            logp = hf(seq)
            for p in range(lo, hi):
                t = p - a if strand == "+" else b - 1 - p  # the base's token in `seq`
                if t == 0 or seq[t] not in "ACGT":
                    continue
                four = logp[t - 1, ACGT]
                four = four - np.logaddexp.reduce(four)
                probs = np.exp(four)
                out[strand]["logp"][p] = logp[t - 1, VOCAB[seq[t]]]
                out[strand]["entropy"][p] = -(probs * four).sum()
                out[strand]["probs"][p] = probs if strand == "+" else probs[::-1]
    return out


def shard_tracks(out: Path, contig: str, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Per strand, per value, the contig's track as the shards hold it; every base written
    at most once per strand (asserted)."""
    table = ds.dataset(str(out / "shards")).to_table()
    got: dict[str, dict[str, np.ndarray]] = {}
    for strand in "+-":
        rows = table.filter((ds.field("seq_id") == contig) & (ds.field("strand") == strand))
        seen = np.zeros(n, np.int32)
        per = {v: np.full(n, np.nan) for v in ("logp", "entropy")} | {
            "probs": np.full((n, 4), np.nan)
        }
        for r in rows.to_pylist():
            a, b = r["start"], r["end"]
            seen[a:b] += 1
            for v in per:
                if v in r:
                    per[v][a:b] = np.asarray(r[v], np.float64)
        assert seen.max(initial=0) <= 1, (contig, strand)
        got[strand] = per
    return got


def check_track(got, want, values=("logp", "entropy", "probs")) -> None:
    for strand in got:
        for v in values:
            g, w = got[strand][v], want[strand][v]
            assert np.array_equal(np.isnan(g), np.isnan(w)), (strand, v)
            ok = ~np.isnan(w)
            np.testing.assert_allclose(g[ok], w[ok], atol=1e-4, err_msg=f"{strand} {v}")


# ---- 1. one genome, plain gzip, both strands ----


@pytest.fixture(scope="module")
def genome_gz(genome_fasta, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tracks-genome") / "sars.fa.gz"
    with open(genome_fasta, "rb") as src, gzip.open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="module")
def genome_run(ray_session, genome_gz, scoring_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracks-genome-out") / "out"
    args = [
        *model_args(scoring_model),
        f"input.tracks={genome_gz}",
        "tracks.values=[logp,entropy,probs]",
        "output.rows_per_shard=32",
        f"output={out}",
    ]
    lines: list[str] = []
    run(compose_config(*args), echo=lines.append)
    return out, args, lines


@pytest.fixture(scope="module")
def sars(genome_fasta) -> tuple[str, str]:
    text = Path(genome_fasta).read_text().splitlines()
    return text[0][1:].split()[0], "".join(text[1:]).upper()


@pytest.mark.slow
def test_every_base_of_a_genome_once_per_strand_matching_hf(genome_run, sars, hf):
    out, _, _ = genome_run
    name, contig = sars
    got = shard_tracks(out, name, len(contig))
    want = expected(contig, hf)
    check_track(got, want)
    # Every base a value, but the one without context on each strand.
    assert np.isnan(got["+"]["logp"]).sum() == 1 and np.isnan(got["+"]["logp"][0])
    assert np.isnan(got["-"]["logp"]).sum() == 1 and np.isnan(got["-"]["logp"][-1])
    m = read_manifest(str(out))
    assert (m["input"], m["strands"]) == ("tracks", "both")
    assert m["tracks"]["contigs"] == [[name, len(contig)]]
    assert {e["path"] for e in m["tracks"]["bigwig"]} == {
        f"tracks/{t}.{s}.bw"
        for t in ("logp", "entropy", "prob_A", "prob_C", "prob_G", "prob_T")
        for s in ("forward", "reverse")
    }


@pytest.mark.slow
def test_the_bigwigs_hold_the_shards_values(genome_run, sars):
    import pyBigWig

    out, _, _ = genome_run
    name, contig = sars
    got = shard_tracks(out, name, len(contig))
    for strand, label in (("+", "forward"), ("-", "reverse")):
        bw = pyBigWig.open(str(out / "tracks" / f"logp.{label}.bw"))
        assert bw.chroms() == {name: len(contig)}
        values = np.asarray(bw.values(name, 0, len(contig), numpy=True), np.float64)
        bw.close()
        np.testing.assert_array_equal(np.isnan(values), np.isnan(got[strand]["logp"]))
        ok = ~np.isnan(values)
        np.testing.assert_allclose(values[ok], got[strand]["logp"][ok], rtol=1e-6)
        probs = load_track(str(out), "prob_G", name, 100, 9_000, label)
        np.testing.assert_allclose(probs, got[strand]["probs"][100:9_000, 2], rtol=1e-6)
    # The loader reads both records alike.
    for source in ("bigwig", "parquet"):
        logp = load_track(str(out), "logp", name, 1_000, 2_000, "forward", source=source)
        np.testing.assert_allclose(logp, got["+"]["logp"][1_000:2_000], rtol=1e-6)


@pytest.mark.slow
def test_a_run_stopped_after_some_shards_resumes_to_the_same_tracks(genome_run, tmp_path):
    out, args, _ = genome_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # What a run killed midway leaves: some committed shards, no bigWigs, no manifest.
    (copy / "_manifest.json").unlink()
    shutil.rmtree(copy / "tracks")
    shards = sorted((copy / "shards").iterdir())
    assert len(shards) >= 2
    for shard in shards[: len(shards) // 2]:
        shard.unlink()
        (copy / "_commits" / f"{shard.name}.json").unlink()
    lines: list[str] = []
    run(compose_config(*args[:-1], f"output={copy}"), echo=lines.append)
    assert any("resuming" in line for line in lines)
    for bw in sorted((out / "tracks").iterdir()):
        assert (copy / "tracks" / bw.name).read_bytes() == bw.read_bytes(), bw.name


# ---- 2. several contigs with N runs, strands merged, a BED ----


@pytest.fixture(scope="module")
def gapped(sars, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    _, g = sars
    contigs = {
        "chrA": g[:3000] + "N" * 700 + g[3000:5000].lower() + "NNNNN" + g[5000:6000],
        "chrB": "N" * 40 + g[8000:9500] + "N" * 1500,
        "chrC": g[12000:12400],  # shorter than one window
        "chrD": "N" * 900,  # nothing to score
    }
    path = tmp_path_factory.mktemp("tracks-gapped") / "gapped.fa"
    path.write_text("".join(f">{k} test\n{v}\n" for k, v in contigs.items()))
    return path, {k: v.upper() for k, v in contigs.items()}


@pytest.mark.slow
def test_contigs_with_n_runs_merged_strands_match_hf(
    ray_session, gapped, scoring_model, hf, tmp_path
):
    path, contigs = gapped
    out = tmp_path / "out"
    args = [*model_args(scoring_model), f"input.tracks={path}", "tracks.strands=merged"]
    run(compose_config(*args, f"output={out}"), echo=lambda _: None)
    m = read_manifest(str(out))
    assert [e["path"] for e in m["tracks"]["bigwig"]] == [
        "tracks/logp.merged.bw",
        "tracks/entropy.merged.bw",
    ]
    for name, contig in contigs.items():
        n = len(contig)
        got = shard_tracks(out, name, n)
        want = expected(contig, hf)
        check_track(got, want, ("logp", "entropy"))
        # Every base once: all but the N bases and the one without context.
        n_bases = sum(c != "N" for c in contig)
        for strand, edge in (("+", 0), ("-", n - 1)):
            values = ~np.isnan(got[strand]["logp"])
            assert values.sum() == n_bases - (contig[edge] != "N"), (name, strand)
        merged = load_track(str(out), "logp", name, 0, n, "merged")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-N contig: no mean
            mean = np.nanmean([want["+"]["logp"], want["-"]["logp"]], axis=0)
        np.testing.assert_array_equal(np.isnan(merged), np.isnan(mean))
        ok = ~np.isnan(mean)
        np.testing.assert_allclose(merged[ok], mean[ok], atol=1e-4)
        parquet = load_track(str(out), "logp", name, 0, n, "merged", source="parquet")
        np.testing.assert_allclose(parquet, merged, rtol=1e-6)


@pytest.mark.slow
def test_a_bed_limits_the_values_to_its_intervals(ray_session, gapped, scoring_model, hf, tmp_path):
    path, contigs = gapped
    bed = tmp_path / "keep.bed"
    bed.write_text("chrA\t100\t400\nchrA\t350\t900\nchrA\t5600\t5700\nchrB\t1000\t1100\n")
    out = tmp_path / "out"
    args = [
        *model_args(scoring_model),
        f"input.tracks={path}",
        f"tracks.regions={bed}",
        "tracks.strands=forward",
        "tracks.values=[logp]",
        f"output={out}",
    ]
    run(compose_config(*args), echo=lambda _: None)
    keep = {"chrA": [(100, 900), (5600, 5700)], "chrB": [(1000, 1100)]}
    for name, contig in contigs.items():
        got = load_track(str(out), "logp", name, 0, len(contig), "forward")
        want = expected(contig, hf)["+"]["logp"]
        inside = np.zeros(len(contig), bool)
        for a, b in keep.get(name, []):
            inside[a:b] = True
        want[~inside] = np.nan
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], atol=1e-4)


# ---- 3. refused before any engine starts ----


def refused(args: list[str], out: Path, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        run(compose_config(*args, f"output={out}"), echo=lambda _: None)
    assert not (out / "shards").exists()


def test_duplicated_contig_names_are_refused(gapped, scoring_model, tmp_path):
    path, _ = gapped
    twin = tmp_path / "twin.fa"
    twin.write_text(">chrB again\nACGTACGT\n")
    args = [*model_args(scoring_model), f"input.tracks=[{path},{twin}]"]
    refused(args, tmp_path / "out", InputError, r"contig 'chrB' is also in .*gapped\.fa")


def test_a_bed_naming_a_contig_the_input_lacks_is_refused(gapped, scoring_model, tmp_path):
    path, _ = gapped
    bed = tmp_path / "other.bed"
    bed.write_text("chrA\t0\t10\nchrZ\t5\t50\n")
    args = [*model_args(scoring_model), f"input.tracks={path}", f"tracks.regions={bed}"]
    refused(args, tmp_path / "out", InputError, r"'chrZ', a contig the input lacks")


def test_contigs_the_input_lacks_are_refused(gapped, scoring_model, tmp_path):
    path, _ = gapped
    args = [*model_args(scoring_model), f"input.tracks={path}", "tracks.contigs=[chrA,chrQ]"]
    refused(args, tmp_path / "out", ConfigError, r"tracks.contigs names 'chrQ'")


def test_tracks_of_a_model_without_an_lm_head_are_refused(gapped, scoring_model, tmp_path):
    from safetensors.torch import load_file, save_file

    path, _ = gapped
    model = tmp_path / "headless"
    shutil.copytree(scoring_model, model)
    weights = load_file(str(model / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    args = [*model_args(str(model)), f"input.tracks={path}"]
    refused(args, tmp_path / "out", ConfigError, r"lm_head.weight")


def test_tracks_of_a_tokenizer_that_is_not_one_token_per_base_are_refused(
    gapped, scoring_model, tmp_path
):
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    path, _ = gapped
    model = tmp_path / "bos"
    shutil.copytree(scoring_model, model)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.post_processor = TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    tok.save(str(model / "tokenizer.json"))
    args = [*model_args(str(model)), f"input.tracks={path}", "model.add_special_tokens=true"]
    refused(args, tmp_path / "out", ConfigError, r"one token per base and no special tokens")


@pytest.mark.parametrize(
    "extra,match",
    [
        ("tracks.context=512", r"tracks.context=512 must be less than window.size=512"),
        ("window.stride=100", r"window.stride=100 does not apply to input.tracks"),
        ("window.reverse_complement=true", r"window.reverse_complement=True does not apply"),
        ("scores=[loglik]", r"scores.compute and scores.per_token do not apply"),
    ],
)
def test_keys_that_do_not_apply_to_tracks_are_refused(
    gapped, scoring_model, tmp_path, extra, match
):
    path, _ = gapped
    args = [*model_args(scoring_model), f"input.tracks={path}", extra]
    refused(args, tmp_path / "out", ConfigError, match)
