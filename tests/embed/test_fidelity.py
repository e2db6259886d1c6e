"""vLLM (CPU, fp32) against the Hugging Face reference on the same token ids."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest

from pipeline.embed.outputs import DeviceHead, embedding_columns
from pipeline.embed.reference import HFReferenceEmbedder
from pipeline.embed.stage import EmbedStage
from pipeline.load.loader import to_numpy
from pipeline.read.fastx import iter_records
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from pipeline.window.windows import reverse_complement
from tests.embed.conftest import cpu_spec

pytestmark = pytest.mark.slow
LOOP_SEQS_PLUS = 40  # more windows in a step than LOOP_SEQS (32): the segment path

# Two engines live in this process: each gets a fixed, small KV cache.
ENGINE_KWARGS = {"enforce_eager": True, "kv_cache_memory_bytes": 512 << 20}
REL_L2 = 1e-4
PEARSON = 0.99999
# (start, length) in the SARS-CoV-2 genome: one base to two full 4 kb windows.
SPANS = [(0, 1), (100, 17), (2000, 100), (5000, 511), (9000, 2048), (12000, 4096), (20000, 4096)]


def close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return rel, float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def windows(tiny_model, genome_fasta):
    (rec,) = list(iter_records(str(genome_fasta)))
    seqs = [rec.sequence[s : s + n] for s, n in SPANS]
    seqs.append("ACGTN" * 40 + "N" * 50)  # ambiguous bases embed too
    ids = DnaTokenizer(TokenizerSpec(tiny_model)).encode(pa.array(seqs, pa.large_string()))
    n = len(seqs)
    return pa.table(
        {
            "chunk_id": [f"w{i}" for i in range(n)],
            "source": ["genome"] * n,
            "seq_id": ["NC_045512.2"] * n,
            "start": pa.array([s for s, _ in SPANS] + [0], pa.int64()),
            "end": pa.array([s + k for s, k in SPANS] + [250], pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.compute.list_value_length(ids).cast(pa.int32()),
            "token_ids": ids,
        }
    )


@pytest.fixture(scope="module")
def stage(tiny_model, vllm_inprocess):
    s = EmbedStage(cpu_spec(tiny_model, engine_kwargs=ENGINE_KWARGS))
    s.ensure_setup()
    return s


@pytest.fixture(scope="module")
def reference(tiny_model, windows):
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    return hf.embed(windows.column("token_ids").to_pylist(), batch_size=1), hf


def column(table: pa.Table, name: str = "embedding") -> np.ndarray:
    return to_numpy(table, embedding=name)[1]


def test_vllm_matches_hf_mean_pooling(stage, windows, reference):
    ref, _ = reference
    out = stage.embed_windows(windows)
    assert out.column("chunk_id").to_pylist() == windows.column("chunk_id").to_pylist()
    got = column(out)
    assert got.dtype == np.float32 and got.shape == (windows.num_rows, 256)
    for i in range(windows.num_rows):
        rel, r = close(got[i], ref[i])
        assert rel <= REL_L2 and r >= PEARSON, (i, rel, r)


def test_window_alone_equals_window_in_a_mixed_batch(stage, windows):
    alone = {i: column(stage.embed_windows(windows.slice(i, 1)))[0] for i in (0, 4, 6)}
    order = np.random.default_rng(3).permutation(windows.num_rows)
    mixed = stage.embed_windows(windows.take(order))
    by_id = dict(zip(mixed.column("chunk_id").to_pylist(), column(mixed), strict=True))
    for i, vec in alone.items():
        rel, r = close(by_id[f"w{i}"], vec)
        assert rel <= REL_L2 and r >= PEARSON, (i, rel, r)


def test_padded_reference_batches_agree(windows, reference):
    ref, hf = reference
    ids = windows.column("token_ids").to_pylist()
    padded = hf.embed(ids, batch_size=4)
    for i in range(len(ids)):
        rel, r = close(padded[i], ref[i])
        assert rel <= REL_L2 and r >= PEARSON, (i, rel, r)


# ---- layers and poolings: our engine model against HF's output_hidden_states ---------------

LAYERS = (0, 1, 2)  # the tiny model's token embeddings, block 1, block 2 after the final norm
POOLINGS = ("mean", "max", "last")


@pytest.fixture(scope="module")
def layer_stage(tiny_model, vllm_inprocess):
    head = DeviceHead.of(LAYERS, POOLINGS, num_layers=2)
    spec = cpu_spec(tiny_model, head=head.to_dict(), engine_kwargs=ENGINE_KWARGS)
    # Columns in another order than the engine's (sorted) layers: found by name, not place.
    columns = embedding_columns([2, 0, 1], POOLINGS, num_layers=2)
    s = EmbedStage(spec, columns=columns)
    s.ensure_setup()
    return s


@pytest.fixture(scope="module")
def layer_reference(reference, windows):
    _, hf = reference
    return hf.pooled(windows.column("token_ids").to_pylist(), LAYERS, POOLINGS)


def test_every_layer_and_pooling_matches_hf(layer_stage, windows, layer_reference):
    out = layer_stage.embed_windows(windows)
    assert out.column("chunk_id").to_pylist() == windows.column("chunk_id").to_pylist()
    assert out.column_names[-9:] == [c.column for c in layer_stage.columns]
    for c in layer_stage.columns:
        got = column(out, c.column)
        ref = layer_reference[:, LAYERS.index(c.layer), POOLINGS.index(c.pooling)]
        for i in range(windows.num_rows):
            if windows.column("n_tokens")[i].as_py() == 1 and c.layer == 0:
                # One token: its embedding row; exact, but Pearson of a constant is undefined.
                np.testing.assert_allclose(got[i], ref[i], rtol=1e-6)
                continue
            rel, r = close(got[i], ref[i])
            assert rel <= REL_L2 and r >= PEARSON, (c.column, i, rel, r)


def test_layers_alone_equal_layers_in_a_mixed_batch(layer_stage, windows):
    alone = {i: layer_stage.embed_windows(windows.slice(i, 1)) for i in (1, 5, 7)}
    order = np.random.default_rng(5).permutation(windows.num_rows)
    mixed = layer_stage.embed_windows(windows.take(order))
    ids = mixed.column("chunk_id").to_pylist()
    for i, one in alone.items():
        for c in layer_stage.columns:
            rel, r = close(column(mixed, c.column)[ids.index(f"w{i}")], column(one, c.column)[0])
            assert rel <= REL_L2 and r >= PEARSON, (c.column, i, rel, r)


def test_last_layer_mean_of_our_model_equals_vllms_pooler(layer_stage, stage, windows):
    """The default runs on vLLM's own pooler; our model's (L, mean) column is the same."""
    ours = column(layer_stage.embed_windows(windows), "embedding")
    theirs = column(stage.embed_windows(windows))
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=1e-6)


def test_merged_strands_are_the_mean_of_both_strands_in_hf(layer_stage, tiny_model):
    seqs = ["ACGTTGCAAC" * 30 + "GGA", "TTTTACGNNA" * 9]
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    fwd = tok.encode(pa.array(seqs, pa.large_string()))
    rc = tok.encode(pa.array([reverse_complement(s) for s in seqs], pa.large_string()))
    n = len(seqs)
    table = pa.table(
        {
            "chunk_id": [f"m{i}" for i in range(n)],
            "source": ["x"] * n,
            "seq_id": ["r"] * n,
            "start": pa.array([0] * n, pa.int64()),
            "end": pa.array([len(s) for s in seqs], pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.compute.list_value_length(fwd).cast(pa.int32()),
            "token_ids": fwd,
            "token_ids_rc": rc,
        }
    )
    out = layer_stage.embed_windows(table)
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    both = (
        hf.pooled(fwd.to_pylist(), LAYERS, POOLINGS) + hf.pooled(rc.to_pylist(), LAYERS, POOLINGS)
    ) / 2
    for c in layer_stage.columns:
        got = column(out, c.column)
        for i in range(n):
            rel, r = close(got[i], both[i, LAYERS.index(c.layer), POOLINGS.index(c.pooling)])
            assert rel <= REL_L2 and r >= PEARSON, (c.column, i, rel, r)


def test_many_short_windows_in_one_step_match_hf(layer_stage, tiny_model, genome_fasta):
    """More windows in a step than LOOP_SEQS: the segment-reduction path, against HF."""
    from pipeline.embed.model import LOOP_SEQS

    (rec,) = list(iter_records(str(genome_fasta)))
    seqs = [rec.sequence[100 * i : 100 * i + 1 + i] for i in range(LOOP_SEQS + 8)]
    ids = DnaTokenizer(TokenizerSpec(tiny_model)).encode(pa.array(seqs, pa.large_string()))
    n = len(seqs)
    table = pa.table(
        {
            "chunk_id": [f"s{i}" for i in range(n)],
            "source": ["x"] * n,
            "seq_id": ["r"] * n,
            "start": pa.array([100 * i for i in range(n)], pa.int64()),
            "end": pa.array([100 * i + 1 + i for i in range(n)], pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.compute.list_value_length(ids).cast(pa.int32()),
            "token_ids": ids,
        }
    )
    out = layer_stage.embed_windows(table)
    ref = HFReferenceEmbedder(tiny_model, dtype="float32").pooled(ids.to_pylist(), LAYERS, POOLINGS)
    for c in layer_stage.columns:
        got = column(out, c.column)
        want = ref[:, LAYERS.index(c.layer), POOLINGS.index(c.pooling)]
        for i in range(n):
            rel, r = close(got[i], want[i])
            assert rel <= REL_L2 and r >= PEARSON, (c.column, i, rel, r)


# ---- regions: pooling over a span of the window, and tiles merged exactly ----------------


def region_table(tok_ids: pa.Array, spans: list[tuple[int, int]], rc: pa.Array | None = None):
    """Region rows as the tokenizer hands them on: token ids and each interval's span."""
    n = len(spans)
    cols = {
        "chunk_id": [f"r{i}" for i in range(n)],
        "source": ["x.bed"] * n,
        "seq_id": ["chrA"] * n,
        "start": pa.array([a for a, _ in spans], pa.int64()),
        "end": pa.array([b for _, b in spans], pa.int64()),
        "strand": ["+"] * n,
        "name": pa.array([None] * n, pa.string()),
        "score": pa.array([None] * n, pa.float64()),
        "bed_strand": ["."] * n,
        "window_start": pa.array([0] * n, pa.int64()),
        "window_end": pa.compute.list_value_length(tok_ids).cast(pa.int64()),
        "span_start": pa.array([a for a, _ in spans], pa.int64()),
        "span_end": pa.array([b for _, b in spans], pa.int64()),
        "n_tokens": pa.compute.list_value_length(tok_ids).cast(pa.int32()),
        "token_ids": tok_ids,
    }
    if rc is not None:
        cols["token_ids_rc"] = rc
    return pa.table(cols)


def region_stage(layer_stage, **changes):
    """The layer stage's engine, asked for region rows."""
    from pipeline.config import InputKind

    s = copy.copy(layer_stage)
    s.kind = InputKind.regions
    for k, v in changes.items():
        setattr(s, k, v)
    return s


def assert_columns_match(stage, out, want, rows):
    for c in stage.columns:
        got = column(out, c.column)
        for i in range(rows):
            w = want[i, LAYERS.index(c.layer), POOLINGS.index(c.pooling)]
            rel, r = close(got[i], w)
            assert rel <= REL_L2 and r >= PEARSON, (c.column, i, rel, r)


@pytest.mark.parametrize("count", [5, LOOP_SEQS_PLUS])
def test_span_pooling_matches_hf_over_the_span_only(layer_stage, tiny_model, genome_fasta, count):
    """Each window pooled over its [a, b) only; few windows (dense path) and more than
    LOOP_SEQS in a step (segment path)."""
    (rec,) = list(iter_records(str(genome_fasta)))
    seqs = [rec.sequence[300 * i : 300 * i + 60 + 7 * i] for i in range(count)]
    spans = [(i % 11, len(s) - (i % 5)) for i, s in enumerate(seqs)]
    ids = DnaTokenizer(TokenizerSpec(tiny_model)).encode(pa.array(seqs, pa.large_string()))
    out = region_stage(layer_stage).embed_windows(region_table(ids, spans))
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    want = hf.pooled(ids.to_pylist(), LAYERS, POOLINGS, spans)
    assert_columns_match(layer_stage, out, want, count)


def test_merged_strands_mirror_the_span(layer_stage, tiny_model, genome_fasta):
    (rec,) = list(iter_records(str(genome_fasta)))
    seqs = [rec.sequence[1000:1400], rec.sequence[7000:7090]]
    spans = [(50, 330), (10, 11)]
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    fwd = tok.encode(pa.array(seqs, pa.large_string()))
    rc = tok.encode(pa.array([reverse_complement(s) for s in seqs], pa.large_string()))
    out = region_stage(layer_stage).embed_windows(region_table(fwd, spans, rc))
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    mirrored = [(len(s) - b, len(s) - a) for s, (a, b) in zip(seqs, spans, strict=True)]
    want = (
        hf.pooled(fwd.to_pylist(), LAYERS, POOLINGS, spans)
        + hf.pooled(rc.to_pylist(), LAYERS, POOLINGS, mirrored)
    ) / 2
    assert_columns_match(layer_stage, out, want, 2)


def test_a_region_longer_than_the_model_is_tiled_and_merged_exactly(
    layer_stage, tiny_model, genome_fasta
):
    """max_model_len 300, flank 50: the interval [100, 900) of a 1000-token window runs as
    four tiles of 200 tokens, each seen with 50 tokens of context either side; mean is the
    token-weighted mean of the tiles' means (= the mean over all 800 tokens as the tiles saw
    them), max the max of maxes, last the last tile's last."""
    (rec,) = list(iter_records(str(genome_fasta)))
    seq = rec.sequence[15000:16000]
    ids = DnaTokenizer(TokenizerSpec(tiny_model)).encode(pa.array([seq], pa.large_string()))
    stage = region_stage(layer_stage, max_model_len=300, flank=50)
    out, requests = stage.embed(region_table(ids, [(100, 900)]))
    assert len(requests.prompts) == 4
    tokens = ids.to_pylist()[0]
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    tiles, spans = [], []
    for lo in (100, 300, 500, 700):  # windows [50, 350), [250, 550), [450, 750), [650, 950)
        tiles.append(tokens[lo - 50 : lo + 250])
        spans.append((50, 250))
    per_tile = hf.pooled(tiles, LAYERS, POOLINGS, spans)
    want = np.empty_like(per_tile[:1])
    want[0, :, 0] = per_tile[:, :, 0].mean(axis=0)  # equal tiles: equal weights
    want[0, :, 1] = per_tile[:, :, 1].max(axis=0)
    want[0, :, 2] = per_tile[-1, :, 2]
    assert_columns_match(layer_stage, out, want, 1)
    # The mean is exact over tokens: the same from HF's per-token states of the four spans.
    h = [
        hf.model(input_ids=__import__("torch").as_tensor([t]), output_hidden_states=True)
        .hidden_states[2][0, 50:250]
        .detach()
        .numpy()
        for t in tiles
    ]
    rel, _ = close(column(out, "embedding")[0], np.concatenate(h).mean(axis=0))
    assert rel <= REL_L2


def test_per_token_states_of_spans_tiles_and_strands_match_hf(
    layer_stage, tiny_model, genome_fasta
):
    """embed.per_token: each row's span, token by token, for every layer: tiles concatenated,
    a merged row's strands averaged base by base (float16 storage)."""
    (rec,) = list(iter_records(str(genome_fasta)))
    seqs = [rec.sequence[15000:16000], rec.sequence[300:420]]
    spans = [(100, 900), (20, 100)]
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    fwd = tok.encode(pa.array(seqs, pa.large_string()))
    rc = tok.encode(pa.array([reverse_complement(s) for s in seqs], pa.large_string()))
    stage = region_stage(layer_stage, max_model_len=300, flank=50, per_token=True)
    out = stage.embed_windows(region_table(fwd, spans, rc))
    torch = __import__("torch")

    def states(ids, a, b):
        """[b - a, layers, hidden] of HF on the whole window (no tiling)."""
        x = torch.as_tensor([ids])
        h = hf.model(input_ids=x, output_hidden_states=True).hidden_states
        return np.stack([h[k][0, a:b].detach().numpy() for k in LAYERS], axis=1)

    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    # Row 1 fits the model: its span's states are HF's on the whole window, both strands.
    ids, ids_rc = fwd.to_pylist()[1], rc.to_pylist()[1]
    want = (states(ids, 20, 100) + states(ids_rc, 20, 100)[::-1]) / 2
    # Row 0 ran as four tiles: each tile's span as HF computes it on the tile window.
    ids0, rc0 = fwd.to_pylist()[0], rc.to_pylist()[0]
    tiles = np.concatenate(
        [states(ids0[lo - 50 : lo + 250], 50, 250) for lo in (100, 300, 500, 700)]
    )
    # Reverse strand: the mirrored span [100, 900) tiled the same way, then reversed.
    tiles_rc = np.concatenate(
        [states(rc0[lo - 50 : lo + 250], 50, 250) for lo in (100, 300, 500, 700)]
    )
    want0 = (tiles + tiles_rc[::-1]) / 2
    for li, k in enumerate(LAYERS):
        got = out.column(f"tokens_l{k}").to_pylist()
        for row, expected in ((0, want0), (1, want)):
            g = np.asarray(got[row], dtype=np.float32)
            assert g.shape == expected[:, li].shape
            rel = np.linalg.norm(g - expected[:, li]) / np.linalg.norm(expected[:, li])
            assert rel < 2e-3, (k, row, rel)  # float16 storage
    assert out.schema.field("tokens_l1").type == pa.large_list(pa.list_(pa.float16(), 256))


def test_variant_scores_with_merged_strands_match_hf(layer_stage, tiny_model, genome_fasta):
    """Variants with window.reverse_complement=merge: each of the reference and alternate
    embeddings is the mean of its two strands, then scored in float64."""
    from pipeline.config import InputKind

    (rec,) = list(iter_records(str(genome_fasta)))
    ref = rec.sequence[2000:2600]
    alts = [
        ref[:300] + ("A" if ref[300] != "A" else "C") + ref[301:],
        ref[:300] + ref[303:] + "G" * 3,
    ]
    tok = DnaTokenizer(TokenizerSpec(tiny_model))

    def enc(seqs):
        return tok.encode(pa.array(seqs, pa.large_string()))

    n = len(alts)
    table = pa.table(
        {
            "chunk_id": [f"v{i}" for i in range(n)],
            "source": ["x.vcf"] * n,
            "seq_id": ["chrA"] * n,
            "pos": pa.array([2301] * n, pa.int64()),
            "id": ["snv", "del"],
            "ref": [ref[300], ref[300:303]],
            "alt": [alts[0][300], ref[300]],
            "start": pa.array([2000] * n, pa.int64()),
            "end": pa.array([2600] * n, pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.array([600] * n, pa.int32()),
            "token_ids": enc([ref] * n),
            "token_ids_rc": enc([reverse_complement(ref)] * n),
            "token_ids_alt": enc(alts),
            "token_ids_alt_rc": enc([reverse_complement(a) for a in alts]),
        }
    )
    stage = copy.copy(layer_stage)
    stage.kind = InputKind.variants
    out, requests = stage.embed(table)
    # The reference window (both strands) is shared by the two rows: embedded once.
    assert len(requests.prompts) == 2 + 2 * n
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")

    def both(seqs):
        f = hf.pooled(enc(seqs).to_pylist(), LAYERS, POOLINGS)
        r = hf.pooled(enc([reverse_complement(s) for s in seqs]).to_pylist(), LAYERS, POOLINGS)
        return ((f + r) / 2).astype(np.float64)

    want_ref, want_alt = both([ref])[0], both(alts)
    for c in layer_stage.columns:
        a = want_ref[LAYERS.index(c.layer), POOLINGS.index(c.pooling)]
        for i in range(n):
            b = want_alt[i, LAYERS.index(c.layer), POOLINGS.index(c.pooling)]
            cos = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            l2 = np.linalg.norm(a - b)
            assert out.column(f"{c.column}_l2")[i].as_py() == pytest.approx(l2, rel=1e-3, abs=1e-6)
            assert out.column(f"{c.column}_cosine")[i].as_py() == pytest.approx(
                cos, rel=2e-2, abs=1e-7
            ), (c.column, i)
