"""vLLM (CPU, fp32) against the Hugging Face reference on the same token ids."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.embed.engine import EngineSpec
from pipeline.embed.reference import HFReferenceEmbedder
from pipeline.embed.stage import EmbedStage
from pipeline.read.fastx import iter_records
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec

pytestmark = pytest.mark.slow

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
    spec = EngineSpec(
        model=tiny_model,
        tokenizer=tiny_model,
        revision=None,
        dtype="float32",
        max_model_len=16384,
        pooling="MEAN",
        device="cpu",
        engine_kwargs={"enforce_eager": True},
    )
    s = EmbedStage(spec)
    s.ensure_setup()
    return s


@pytest.fixture(scope="module")
def reference(tiny_model, windows):
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    return hf.embed(windows.column("token_ids").to_pylist(), batch_size=1), hf


def as_array(table: pa.Table) -> np.ndarray:
    emb = table.column("embedding").combine_chunks()
    return emb.flatten().to_numpy().reshape(len(emb), -1)


def test_vllm_matches_hf_mean_pooling(stage, windows, reference):
    ref, _ = reference
    out = stage.embed_windows(windows)
    assert out.column("chunk_id").to_pylist() == windows.column("chunk_id").to_pylist()
    got = as_array(out)
    assert got.dtype == np.float32 and got.shape == (windows.num_rows, 256)
    for i in range(windows.num_rows):
        rel, r = close(got[i], ref[i])
        assert rel <= REL_L2 and r >= PEARSON, (i, rel, r)


def test_window_alone_equals_window_in_a_mixed_batch(stage, windows):
    alone = {i: as_array(stage.embed_windows(windows.slice(i, 1)))[0] for i in (0, 4, 6)}
    order = np.random.default_rng(3).permutation(windows.num_rows)
    mixed = stage.embed_windows(windows.take(order))
    by_id = dict(zip(mixed.column("chunk_id").to_pylist(), as_array(mixed), strict=True))
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
