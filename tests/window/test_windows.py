from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.window.windows import (
    alt_window_sequence,
    chunk_id,
    flanked,
    mirror,
    reverse_complement,
    spans,
    variant_window,
)

lengths = st.integers(min_value=0, max_value=5000)
sizes = st.integers(min_value=1, max_value=700)


@st.composite
def geometry(draw):
    size = draw(sizes)
    return draw(lengths), size, draw(st.integers(min_value=1, max_value=size))


@settings(max_examples=400, deadline=None)
@given(geometry(), st.sampled_from(["keep", "shift", "drop"]))
def test_span_invariants(g, last):
    length, size, stride = g
    out = spans(length, size, stride, last)
    for s, e in out:
        assert 0 <= s < e <= length
        assert e - s <= size
    starts = [s for s, _ in out]
    assert starts == sorted(set(starts))
    # All but the final window are full-size and exactly `stride` apart.
    for (s0, e0), (s1, _) in itertools.pairwise(out[:-1]):
        assert e0 - s0 == size and s1 - s0 == stride
    if length == 0:
        assert out == []


@settings(max_examples=400, deadline=None)
@given(geometry(), st.sampled_from(["keep", "shift"]))
def test_every_base_covered(g, last):
    length, size, stride = g
    covered = bytearray(length)
    for s, e in spans(length, size, stride, last):
        covered[s:e] = b"\x01" * (e - s)
    assert all(covered)


@settings(max_examples=300, deadline=None)
@given(geometry())
def test_last_window_policies(g):
    length, size, stride = g
    keep = spans(length, size, stride, "keep")
    shift = spans(length, size, stride, "shift")
    drop = spans(length, size, stride, "drop")
    if not keep:
        return
    s, e = keep[-1]
    assert e == length
    if e - s == size:  # no short window: the policies agree
        assert keep == shift == drop
    else:
        assert drop == keep[:-1]
        assert shift[:-1] == keep[:-1]
        assert shift[-1] == (max(0, length - size), length)
        # drop covers exactly up to its last window; nothing past it
        assert all(b <= length for _, b in drop)


def test_small_examples():
    assert spans(10, 4, 4) == [(0, 4), (4, 8), (8, 10)]
    assert spans(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert spans(10, 4, 4, "shift") == [(0, 4), (4, 8), (6, 10)]
    assert spans(10, 4, 4, "drop") == [(0, 4), (4, 8)]
    assert spans(3, 4, 4, "drop") == []
    assert spans(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]


@given(st.text(alphabet="ACGTRYKMSWBDHVN", max_size=200))
def test_reverse_complement_is_an_involution(seq):
    assert reverse_complement(reverse_complement(seq)) == seq
    assert len(reverse_complement(seq)) == len(seq)


def test_reverse_complement_example():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("RYKM") == "KMRY"


def test_chunk_id_is_deterministic_and_sensitive():
    base = ("s3://b/x.fa", "chr1", 0, 100, "+", "model-a")
    assert chunk_id(*base) == chunk_id(*base)
    assert len(chunk_id(*base)) == 32
    variants = {chunk_id(*base)}
    for i, other in enumerate(["s3://b/y.fa", "chr2", 1, 101, "-", "model-b"]):
        changed = list(base)
        changed[i] = other
        variants.add(chunk_id(*changed))
    assert len(variants) == 7
    # Field boundaries are unambiguous.
    assert chunk_id("a", "bc", 0, 1, "+", "m") != chunk_id("ab", "c", 0, 1, "+", "m")


# ---- regions and variants --------------------------------------------------------------

contig = st.integers(min_value=1, max_value=3000)


@settings(max_examples=400, deadline=None)
@given(contig, st.data(), st.integers(min_value=0, max_value=4000))
def test_flanks_are_clipped_at_contig_ends(length, data, flank):
    start = data.draw(st.integers(min_value=0, max_value=length - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=length))
    w0, w1 = flanked(start, end, flank, length)
    assert 0 <= w0 <= start < end <= w1 <= length
    assert w0 == max(0, start - flank) and w1 == min(length, end + flank)


def test_flank_examples():
    assert flanked(100, 200, 50, 1000) == (50, 250)
    assert flanked(10, 200, 50, 220) == (0, 220)


@settings(max_examples=400, deadline=None)
@given(contig, st.data(), st.integers(min_value=1, max_value=4000))
def test_variant_windows_lie_inside_the_contig_and_hold_the_variant(length, data, size):
    pos = data.draw(st.integers(min_value=1, max_value=length))
    start, end = variant_window(pos, size, length)
    assert 0 <= start <= pos - 1 < end <= length
    assert end - start == min(size, length)
    # Centred where the contig allows: the variant's first base is size // 2 in.
    if size // 2 <= pos - 1 <= length - size + size // 2:
        assert pos - 1 - start == size // 2


def test_variant_window_examples():
    # POS 5 near the start: shifted to 0; POS 11990 near the end of a 12000-base contig:
    # shifted to end there; POS 3000 in the middle: 3000 - 1 - 500.
    assert variant_window(5, 1000, 12000) == (0, 1000)
    assert variant_window(11990, 1000, 12000) == (11000, 12000)
    assert variant_window(3000, 1000, 12000) == (2499, 3499)
    assert variant_window(3, 1000, 400) == (0, 400)  # the contig is shorter than a window


@settings(max_examples=300, deadline=None)
@given(
    st.text("ACGT", min_size=1, max_size=300),
    st.data(),
    st.integers(min_value=1, max_value=120),
)
def test_alt_windows_replace_ref_and_fill_to_size(seq, data, size):
    pos = data.draw(st.integers(min_value=1, max_value=len(seq)))
    ref_len = data.draw(st.integers(min_value=1, max_value=len(seq) - pos + 1))
    ref = seq[pos - 1 : pos - 1 + ref_len]
    alt = data.draw(st.text("ACGT", min_size=1, max_size=40))
    start, _ = variant_window(pos, size, len(seq))
    got = alt_window_sequence(lambda a, b: seq[a:b], start, pos, ref, alt, size, len(seq))
    edited = seq[: pos - 1] + alt + seq[pos - 1 + ref_len :]
    assert got == edited[start : start + size]
    assert len(got) == min(size, len(edited) - start)


def test_mirror_is_its_own_inverse():
    assert mirror((2, 5), 10) == (5, 8) and mirror(mirror((2, 5), 10), 10) == (2, 5)
