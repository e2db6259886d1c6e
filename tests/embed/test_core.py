"""The engine core's own rules, on a stand-in engine (whose answers are known exactly): one
thread, a failed call breaks it for good, identical windows run once, strands are averaged and
tiles merged by the head's poolings. The real engine's numbers: tests/embed/test_fidelity.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.embed import core as core_module
from pipeline.embed.core import EngineBroken, EngineCore, Window
from pipeline.embed.outputs import DeviceHead, EmbeddingColumn, embedding_columns
from tests.embed.conftest import engine_spec

D = 4


class StandInEngine:
    """Answers each prompt with [layers, poolings, D] values made from its span's ids: mean,
    max and last of the ids (a window's 'hidden state' is its token id), layer k adds k."""

    def __init__(self, head: DeviceHead | None):
        self.head = head
        self.calls: list[list[list[int]]] = []
        self.fail = False

    def encode(self, prompts, params=None, pooling_task=None, use_tqdm=False):
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access")
        ids = [p["prompt_token_ids"] for p in prompts]
        self.calls.append(ids)
        out = []
        for i, t in enumerate(ids):
            span = (params[i].extra_kwargs or {}).get("dnaembed_span") if params else None
            x = np.asarray(t[span[0] : span[1]] if span else t, np.float32)
            layers = self.head.layers if self.head else (0,)
            poolings = self.head.poolings if self.head else ("mean",)
            pooled = {"mean": x.mean(), "max": x.max(), "last": x[-1]}
            v = np.array([[pooled[p] + k] * D for k in layers for p in poolings], np.float32)
            out.append(
                SimpleNamespace(
                    prompt_token_ids=t, outputs=SimpleNamespace(data=torch.tensor(v.reshape(-1)))
                )
            )
        return out


@pytest.fixture
def started(monkeypatch):
    def make(head: DeviceHead | None = None, columns=None, **kw):
        engine = StandInEngine(head)
        monkeypatch.setattr(core_module, "build_llm", lambda spec: engine)
        spec = engine_spec(device="cpu", head=head.to_dict() if head else None)
        core = EngineCore(spec, columns or [EmbeddingColumn("embedding", -1, "mean")], **kw)
        core.start()
        engine.calls.clear()
        return core, engine

    return make


def ids(*values: int) -> np.ndarray:
    return np.asarray(values, np.int32)


def test_identical_windows_run_once_and_strands_are_averaged(started):
    core, engine = started()
    items = [
        [Window(ids(1, 2, 3))],
        [Window(ids(1, 2, 3)), Window(ids(7, 8, 9), reverse=True)],  # merged strands
        [Window(ids(7, 8, 9))],
    ]
    got = core.embed(items)
    assert engine.calls == [[[1, 2, 3], [7, 8, 9]]]  # forward windows first, each once
    assert (got.requests, got.tokens, got.shared) == (2, 6, 2)
    np.testing.assert_array_equal(got.vectors["embedding"][:, 0], [2.0, 5.0, 8.0])
    assert core.dimension == D


def test_tiles_of_a_long_window_merge_by_pooling(started):
    head = DeviceHead.of([0, 1], ["mean", "max", "last"], num_layers=2)
    columns = embedding_columns([1, 0], ["mean", "max", "last"], num_layers=2)
    core, engine = started(head, columns, tile_tokens=6, flank=1)
    window = ids(*range(10, 20))  # 10 tokens, span [1, 9): tiles of 4 with a flank of 1
    got = core.embed([[Window(window, (1, 9))]])
    assert engine.calls == [[list(range(10, 16)), list(range(14, 20))]]
    span = np.arange(11, 19, dtype=np.float64)
    for c in columns:
        want = {"mean": span.mean(), "max": span.max(), "last": span[-1]}[c.pooling] + c.layer
        assert got.vectors[c.column][0, 0] == np.float32(want), c.column


def test_one_thread_calls_the_engine_whoever_asks(started):
    core, engine = started()
    threads = []
    engine_encode = engine.encode

    def encode(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return engine_encode(*args, **kwargs)

    engine.encode = encode
    asker = threading.Thread(target=core.embed, args=([[Window(ids(1, 2))]],))
    asker.start()
    asker.join()
    core.embed([[Window(ids(3, 4))]])
    assert len(threads) == 2 and len(set(threads)) == 1
    assert threads[0].startswith("engine") and threads[0] != threading.current_thread().name


def test_a_failed_call_breaks_the_engine_for_good(started):
    core, engine = started()
    engine.fail = True
    with pytest.raises(RuntimeError, match="illegal memory access"):
        core.embed([[Window(ids(1, 2))]])
    engine.fail = False  # even if the engine would answer again: its state is unknown
    with pytest.raises(EngineBroken, match="an earlier engine call failed"):
        core.embed([[Window(ids(1, 2))]])
    assert isinstance(core.broken, RuntimeError)
