"""Zero-shot scores from the engine core's log-probabilities: per window, per variant, per base.

Pure numpy. The core (pipeline/embed/core.py) returns each window's scored tokens
(`TokenScores`: log P(x_t | x_<t), the prediction's entropy and the log-probs of A, C, G, T[, N]
at t, in the window's own order); the kinds of input turn them into these columns. Signs:
log-likelihoods are <= 0 (higher: more likely under the model); a log-likelihood ratio is
alternate minus reference, so a negative one means the model finds the alternate less likely.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.embed.core import TokenScores

LOGLIK_SUM = "loglik_sum"
LOGLIK_MEAN = "loglik_mean"
LLR_SUM = "llr_sum"
LLR_MEAN = "llr_mean"
LLR_SITE = "llr_site"
LOGLIK = (LOGLIK_SUM, LOGLIK_MEAN)
LLR = (LLR_SUM, LLR_MEAN, LLR_SITE)
# Per-token (scores.per_token): over the same bases as embed.per_token's states.
LOGP = "logp"
LOGP_BASES = "logp_bases"
ENTROPY = "entropy"
PER_TOKEN = (LOGP, LOGP_BASES, ENTROPY)

BASES = "ACGT"
# The alphabet's A, C, G, T on the other strand: a reverse window's prediction of T at a
# position is the forward strand's A there.
_COMPLEMENT = [3, 2, 1, 0]

SCORE_VALUE = pa.float64()
TOKEN_LOGP = pa.large_list(pa.float32())
TOKEN_BASES = pa.large_list(pa.list_(pa.float32(), 4))


def score_types() -> dict[str, pa.DataType]:
    """Every score column's Arrow type (a kind's columns may carry a role suffix)."""
    return {
        **{c: SCORE_VALUE for c in (*LOGLIK, *LLR)},
        LOGP: TOKEN_LOGP,
        ENTROPY: TOKEN_LOGP,
        LOGP_BASES: TOKEN_BASES,
    }


def loglik(ts: TokenScores, first: int | None = None) -> tuple[float, float, int]:
    """(sum, mean, count) of log P(x_t | x_<t) over the window's scored tokens from `first`
    (its own order; None: all of them)."""
    lp = ts.logp if first is None else ts.logp[max(0, first - ts.start) :]
    ok = ~np.isnan(lp)
    n = int(ok.sum())
    total = float(lp[ok].astype(np.float64).sum())
    return total, (total / n if n else float("nan")), n


def strands_loglik(item: Sequence[TokenScores]) -> tuple[float, float]:
    """An item's (sum, mean) log-likelihood: its strands' averaged (GPN, Evo 2)."""
    got = [loglik(ts)[:2] for ts in item]
    return float(np.mean([g[0] for g in got])), float(np.mean([g[1] for g in got]))


def llr(ref: Sequence[TokenScores], alt: Sequence[TokenScores]) -> tuple[float, float]:
    """(sum, mean) log-likelihood ratio, alternate minus reference, over the tokens from
    each strand's fork (`site`: the first token where the two windows differ) to the window's
    end, strands averaged. The tokens before the fork are the same in both windows with the
    same context, so their terms cancel: this is the ratio of the whole windows."""
    sums, means = [], []
    for r, a in zip(ref, alt, strict=True):
        fork = r.site if r.site is not None else r.start
        rs, rm, _ = loglik(r, fork)
        as_, am, _ = loglik(a, fork)
        sums.append(as_ - rs)
        means.append(am - rm)
    return float(np.mean(sums)), float(np.mean(means))


def site_term(ref: Sequence[TokenScores], ref_base: str, alt_base: str) -> float | None:
    """An SNV's log P(alt | left context) - log P(ref | left context) at the variant, from
    the reference window's prediction there (the same in the alternate's: same context);
    strands averaged, the reverse strand's with complemented bases. None: not an SNV or a
    base outside A, C, G, T."""
    if len(ref_base) != 1 or len(alt_base) != 1 or not {ref_base, alt_base} <= set(BASES):
        return None
    terms = []
    for ts in ref:
        if ts.site is None or not 0 <= ts.site - ts.start < len(ts.logp):
            return None
        row = ts.alphabet[ts.site - ts.start]
        i, j = BASES.index(alt_base), BASES.index(ref_base)
        if ts.reverse:
            i, j = _COMPLEMENT[i], _COMPLEMENT[j]
        terms.append(float(row[i]) - float(row[j]))
    return float(np.mean(terms)) if terms else None


def forward_tokens(ts: TokenScores, length: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(first forward position, logp, entropy, A/C/G/T log-probs) of a window's scored tokens
    in forward order; a reverse window of `length` tokens is mirrored, its bases complemented."""
    bases = ts.alphabet[:, :4]
    if not ts.reverse:
        return ts.start, ts.logp, ts.entropy, bases
    first = length - (ts.start + len(ts.logp))
    return first, ts.logp[::-1], ts.entropy[::-1], bases[::-1][:, _COMPLEMENT]


def strands_tokens(
    item: Sequence[TokenScores], lengths: Sequence[int], lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per forward position in [lo, hi): logp, entropy and A/C/G/T log-probs, the mean of the
    strands that scored it (NaN where none did: a window's first token has no context)."""
    m = hi - lo
    lp = np.full((len(item), m), np.nan, np.float32)
    ent = np.full((len(item), m), np.nan, np.float32)
    bases = np.full((len(item), m, 4), np.nan, np.float32)
    for k, (ts, n) in enumerate(zip(item, lengths, strict=True)):
        first, a, b, c = forward_tokens(ts, n)
        i0, i1 = max(lo, first), min(hi, first + len(a))
        if i0 < i1:
            lp[k, i0 - lo : i1 - lo] = a[i0 - first : i1 - first]
            ent[k, i0 - lo : i1 - lo] = b[i0 - first : i1 - first]
            bases[k, i0 - lo : i1 - lo] = c[i0 - first : i1 - first]
    with warnings.catch_warnings():
        # A position no strand scored stays NaN: that is the answer, not a warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(lp, 0), np.nanmean(ent, 0), np.nanmean(bases, 0)


def token_arrays(per_row: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, pa.Array]:
    """The per-token columns of rows, from each row's (logp, entropy, bases)."""
    lp = [r[0] for r in per_row]
    ent = [r[1] for r in per_row]
    bases = [r[2] for r in per_row]
    return {
        LOGP: _lists(lp, TOKEN_LOGP),
        LOGP_BASES: _lists(bases, TOKEN_BASES),
        ENTROPY: _lists(ent, TOKEN_LOGP),
    }


def _lists(arrays: list[np.ndarray], type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    flat = (
        np.concatenate(arrays).astype(np.float32) if arrays else np.zeros((0,), np.float32)
    ).reshape(-1)
    values = pa.array(flat, pa.float32())
    if type_ == TOKEN_BASES:
        values = pa.FixedSizeListArray.from_arrays(values, 4)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)
