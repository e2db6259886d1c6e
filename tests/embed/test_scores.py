"""The engine core's scores on the real vLLM engine (CPU) against Hugging Face transformers'
log_softmax(logits) gathered on the next tokens, computed here: per-token log-probs, window
sums, variant log-likelihood ratios on both strands, and the shared left flank (an engine that
scores alone caches prefixes) against the full computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embed import scores as sc
from pipeline.embed.core import EngineCore, Window
from pipeline.embed.outputs import DeviceHead, embedding_columns
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from pipeline.window.windows import reverse_complement
from tests.embed.conftest import cpu_spec
from tests.reference_fixtures import read_genome

pytestmark = pytest.mark.slow

COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


@pytest.fixture(scope="module")
def genome(genome_fasta) -> str:
    return read_genome(genome_fasta)


@pytest.fixture(scope="module")
def tok(scoring_model):
    return DnaTokenizer(TokenizerSpec(scoring_model))


def alphabet(tok) -> tuple[int, ...]:
    return tuple(tok.token_id(b) for b in "ACGTN")


def ids_of(tok, seq: str) -> np.ndarray:
    return np.asarray([tok.token_id(c) for c in seq], np.int64)


@pytest.fixture(scope="module")
def hf(scoring_model):
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(scoring_model, torch_dtype=torch.float32).eval()

    def logp(ids: np.ndarray) -> np.ndarray:
        """[n, vocab] log-probs of the next token after each position."""
        with torch.no_grad():
            logits = model(torch.as_tensor(ids)[None]).logits[0]
        return torch.log_softmax(logits.float(), -1).numpy()

    return logp


def next_token(logp: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log P(x_t | x_<t) for t = 1 .. n-1."""
    return logp[np.arange(len(ids) - 1), ids[1:]]


@pytest.fixture(scope="module")
def engines(scoring_model, tok, vllm_inprocess):
    """Two engines of one model: scores alone (prefix caching on), and scores beside an
    embedding (every token computed)."""
    made = {}
    for name, layers in (("alone", ()), ("beside", (2,))):
        head = DeviceHead.of(layers, ("mean",), 2, alphabet(tok))
        spec = cpu_spec(
            scoring_model,
            head=head.to_dict(),
            pooling="LAST" if not layers else "MEAN",
            max_model_len=2048,
            engine_kwargs={"kv_cache_memory_bytes": 256 << 20},
        )
        core = EngineCore(spec, embedding_columns(layers, ["mean"], 2))
        core.start()
        made[name] = core
    return made


def test_per_token_log_probs_and_window_sums_match_hf(engines, genome, tok, hf):
    windows = [genome[1000:1300], genome[5000:5517], genome[20000:20064]]
    for core in engines.values():
        got = core.embed([[Window(ids_of(tok, w), score=(0, len(w)))] for w in windows])
        for w, (ts,) in zip(windows, got.scores, strict=True):
            ids = ids_of(tok, w)
            logp = hf(ids)
            want = next_token(logp, ids)
            assert np.isnan(ts.logp[0])  # the first token has no context
            np.testing.assert_allclose(ts.logp[1:], want, atol=1e-4, rtol=0)
            entropy = -(np.exp(logp) * logp).sum(-1)[:-1]
            np.testing.assert_allclose(ts.entropy[1:], entropy, atol=1e-4, rtol=0)
            bases = logp[:-1][:, list(alphabet(tok))]
            np.testing.assert_allclose(ts.alphabet[1:], bases, atol=1e-4, rtol=0)
            total, mean, n = sc.loglik(ts)
            assert n == len(w) - 1
            assert abs(total - want.astype(np.float64).sum()) < 1e-3
            assert abs(mean - want.mean()) < 1e-4


def _variant(genome: str, at: int, size: int, offset: int, ref: str, alt: str):
    """(ref window, alt window) of `size` with the variant at `offset`, built by slicing:
    the alternate keeps the start, REF replaced by ALT, filled from the genome to `size`."""
    start = at - offset
    assert genome[at : at + len(ref)] == ref
    ref_w = genome[start : start + size]
    alt_w = (genome[start:at] + alt + genome[at + len(ref) :])[:size]
    return ref_w, alt_w


def _hf_llr(hf, tok, ref_w: str, alt_w: str) -> float:
    """Whole-window log-likelihood ratio, alternate minus reference."""
    r, a = ids_of(tok, ref_w), ids_of(tok, alt_w)
    return float(next_token(hf(a), a).sum() - next_token(hf(r), r).sum())


def _core_llr(core, tok, pairs: list[tuple[str, str]], merge: bool):
    """LLRs through the core as the variants kind asks: each strand's windows scored from
    their fork, the reference's items first."""
    from pipeline.embed.core import common_prefix

    items = []
    for strand in ("+", "-") if merge else ("+",):
        for ref_w, alt_w in pairs:
            if strand == "-":
                ref_w, alt_w = reverse_complement(ref_w), reverse_complement(alt_w)
            r, a = ids_of(tok, ref_w), ids_of(tok, alt_w)
            fork = common_prefix(r, a)
            items.append(
                (
                    Window(r, score=(fork, len(r)), site=fork, reverse=strand == "-"),
                    Window(a, score=(fork, len(a)), site=fork, reverse=strand == "-"),
                )
            )
    n = len(pairs)
    strands = 2 if merge else 1
    # As the embed stage asks: every row's reference item, then every alternate item, each
    # item its strands.
    refs = [[items[k * n + i][0] for k in range(strands)] for i in range(n)]
    alts = [[items[k * n + i][1] for k in range(strands)] for i in range(n)]
    got = core.embed(refs + alts)
    return [sc.llr(got.scores[i], got.scores[n + i]) for i in range(n)], got


VARIANTS = [
    # (position in the genome, REF, ALT) where REF is read from it; offsets below.
    ("snv", 3000, 1, "x"),
    ("mnv", 8000, 2, "mnv"),
    ("ins", 12000, 1, "ins"),
    ("del", 15000, 4, "del"),
]


def _alt(kind: str, ref: str) -> str:
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}
    if kind == "x":
        return other[ref]
    if kind == "mnv":
        return "".join(other[c] for c in ref)
    if kind == "ins":
        return ref + "GT"
    return ref[0]


@pytest.mark.parametrize("offset", [127, 224])  # centred and near the end of 255 bases
def test_variant_llr_matches_hf_on_both_strands_and_merged(engines, genome, tok, hf, offset):
    pairs, want_fwd, want_rc, site = [], [], [], []
    for _, at, n, how in VARIANTS:
        ref = genome[at : at + n]
        ref_w, alt_w = _variant(genome, at, 255, offset, ref, _alt(how, ref))
        pairs.append((ref_w, alt_w))
        want_fwd.append(_hf_llr(hf, tok, ref_w, alt_w))
        want_rc.append(_hf_llr(hf, tok, reverse_complement(ref_w), reverse_complement(alt_w)))
        if how == "x":
            r = ids_of(tok, ref_w)
            row = hf(r)[offset - 1]
            fwd = row[tok.token_id(_alt(how, ref))] - row[tok.token_id(ref)]
            rc_ids = ids_of(tok, reverse_complement(ref_w))
            back = hf(rc_ids)[255 - 1 - offset - 1]
            rc = (
                back[tok.token_id(COMPLEMENT[_alt(how, ref)])] - back[tok.token_id(COMPLEMENT[ref])]
            )
            site.append((fwd, (fwd + rc) / 2))
    results = {}
    for name, core in engines.items():
        fwd, _ = _core_llr(core, tok, pairs, merge=False)
        merged, got = _core_llr(core, tok, pairs, merge=True)
        for (s, _), w in zip(fwd, want_fwd, strict=True):
            assert abs(s - w) < 1e-3, (name, s, w)
        for (s, _), w0, w1 in zip(merged, want_fwd, want_rc, strict=True):
            assert abs(s - (w0 + w1) / 2) < 1e-3, (name, s, w0, w1)
        results[name] = (fwd, merged, got)
    # The shared flank: the engine that scores alone computed fewer tokens than it was given
    # (the alternates' cached prefix), and answered as the one that computes every token.
    alone, beside = results["alone"], results["beside"]
    assert alone[2].computed < alone[2].tokens
    assert beside[2].computed == beside[2].tokens
    for a, b in zip(alone[0] + alone[1], beside[0] + beside[1], strict=True):
        assert abs(a[0] - b[0]) < 1e-3 and abs(a[1] - b[1]) < 1e-4
    # The SNV's site term: forward, and merged with the reverse strand's.
    ref_w, _ = pairs[0]
    r = ids_of(tok, ref_w)
    fork = offset
    core = engines["alone"]
    got = core.embed([[Window(r, score=(fork, 255), site=fork)]])
    ref = genome[VARIANTS[0][1]]
    term = sc.site_term(got.scores[0], ref, _alt("x", ref))
    assert abs(term - site[0][0]) < 1e-4
    rc = ids_of(tok, reverse_complement(ref_w))
    back = 255 - 1 - fork
    both = core.embed(
        [
            [
                Window(r, score=(fork, 255), site=fork),
                Window(rc, score=(back, 255), site=back, reverse=True),
            ]
        ]
    )
    assert abs(sc.site_term(both.scores[0], ref, _alt("x", ref)) - site[0][1]) < 1e-4


def test_alternates_sharing_more_than_the_reference_fill_from_each_other(engines, genome, tok, hf):
    """Two alternates of one site whose common prefix runs past a cache block beyond where
    they leave the reference: the second's skipped states come from the first."""
    core = engines["alone"]
    block = core.block_size
    assert block > 1
    offset = block - 8  # the variant 8 tokens before a block boundary
    at = 6000
    ref = genome[at]
    first = {"A": "C", "C": "G", "G": "T", "T": "A"}[ref]
    # ALT1 = first base; ALT2 = the same base then 12 reference bases and an extra one:
    # alt1 and alt2 agree for offset + 13 tokens, past the block; both leave the ref at offset.
    alt2 = first + genome[at + 1 : at + 13] + "A"
    pairs = [_variant(genome, at, 2 * block, offset, ref, a) for a in (first, alt2)]
    want = [_hf_llr(hf, tok, r, a) for r, a in pairs]
    got, answer = _core_llr(core, tok, pairs, merge=False)
    for (s, _), w in zip(got, want, strict=True):
        assert abs(s - w) < 1e-3
    # alt2 took a whole block from alt1's cache (so its first scored tokens were filled).
    assert answer.computed <= answer.tokens - block
