"""pipeline/serve/service.py without a server: a request's checks and windows (the real
tokenizer), and the queue that batches requests into engine calls (with a stand-in engine)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from pipeline.compose import compose, to_config
from pipeline.config import Strands
from pipeline.serve.api import ApiError, EmbeddingRequest
from pipeline.serve.service import Embedder, EngineQueue, Job, plan_service
from pipeline.window.windows import reverse_complement


@pytest.fixture(scope="module")
def embedder():
    cfg = to_config(compose(["model=tiny", "model.max_model_len=64"], config_name="serve"))
    return Embedder(plan_service(cfg))  # no engine: prepare() needs only the tokenizer


def request(*inputs: str, strands: Strands = Strands.forward) -> EmbeddingRequest:
    return EmbeddingRequest(list(inputs), ["embedding"], strands, "float", None)


def test_inputs_are_read_as_a_batch_run_reads_a_record(embedder):
    lut = embedder.tokenizer.lut
    job = embedder.prepare(request("acgtRYn", "TTGA"), "r1")
    # Soft-masked bases count, IUPAC codes become N (input.ambiguity_codes=to_n).
    want = lut[np.frombuffer(b"ACGTNNN", np.uint8)]
    np.testing.assert_array_equal(job.windows["r1/0/f"], want)
    assert sorted(job.windows) == ["r1/0/f", "r1/1/f"]
    assert (job.n_inputs, job.bases, job.tokens) == (2, 11, 11)


def test_strands_decide_the_windows(embedder):
    lut = embedder.tokenizer.lut
    rc = lut[np.frombuffer(reverse_complement("AACGT").encode(), np.uint8)]
    rev = embedder.prepare(request("AACGT", strands=Strands.reverse), "r")
    assert list(rev.windows) == ["r/0/r"]
    np.testing.assert_array_equal(rev.windows["r/0/r"], rc)
    merge = embedder.prepare(request("AACGT", strands=Strands.merge), "m")
    assert list(merge.windows) == ["m/0/f", "m/0/r"]
    assert merge.tokens == 5 and merge.engine_tokens == 10  # usage counts the input once


@pytest.mark.parametrize(
    ("inputs", "code", "index", "position"),
    [
        (["ACGT", "ACGXT"], "invalid_dna", 1, 3),
        (["AC-GT"], "invalid_dna", 0, 2),
        (["ACGU"], "invalid_dna", 0, 3),
        (["ACGT", "A" * 65], "input_too_long", 1, 64),
    ],
)
def test_a_bad_input_is_named_by_index_and_position(embedder, inputs, code, index, position):
    with pytest.raises(ApiError) as e:
        embedder.prepare(request(*inputs), "bad")
    assert (e.value.status, e.value.code, e.value.index, e.value.position) == (
        400,
        code,
        index,
        position,
    )
    assert f"input[{index}]" in e.value.message


class StandIn:
    """An engine that takes `seconds` per call and answers each input with its job's id."""

    def __init__(self, seconds: float = 0.05, fail: bool = False):
        self.seconds, self.fail = seconds, fail
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def setup(self) -> None:
        self.threads.add(threading.current_thread().name)

    def run(self, jobs: list[Job]) -> list:
        self.threads.add(threading.current_thread().name)
        self.calls.append([j.rid for j in jobs])
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access")
        return [[{"embedding": np.array([float(j.rid[1:])])}] * j.n_inputs for j in jobs]


def job(i: int, tokens: int = 10) -> Job:
    return Job(f"j{i}", Strands.forward, 1, tokens, tokens, {f"j{i}/0/f": np.zeros(tokens)})


def test_requests_that_wait_go_in_one_call_up_to_the_budget():
    engine = StandIn()
    queue = EngineQueue(engine, budget=30)
    queue.start()

    async def main():
        first = asyncio.ensure_future(queue.submit(job(0)))
        await asyncio.sleep(0.01)  # the engine is busy with j0 while five more arrive
        rest = [asyncio.ensure_future(queue.submit(job(i))) for i in range(1, 6)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert [r[0]["embedding"][0] for r in results] == [0, 1, 2, 3, 4, 5]  # each its own
    assert engine.calls == [["j0"], ["j1", "j2", "j3"], ["j4", "j5"]]  # 30 tokens a call
    assert len(engine.threads) == 1 and next(iter(engine.threads)).startswith("engine")
    assert queue.broken is None


def test_a_request_whose_client_left_is_not_embedded():
    engine = StandIn()
    queue = EngineQueue(engine, budget=1000)

    async def main():
        first = asyncio.ensure_future(queue.submit(job(0)))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(queue.submit(job(1)))
        kept = asyncio.ensure_future(queue.submit(job(2)))
        await asyncio.sleep(0.005)
        gone.cancel()
        return await asyncio.gather(first, kept)

    asyncio.run(main())
    assert engine.calls == [["j0"], ["j2"]]


def test_a_failed_engine_call_fails_its_requests_and_marks_the_engine_broken():
    queue = EngineQueue(StandIn(fail=True), budget=1000)

    async def main():
        return await asyncio.gather(queue.submit(job(0)), return_exceptions=True)

    (error,) = asyncio.run(main())
    assert isinstance(error, RuntimeError) and queue.broken is error
