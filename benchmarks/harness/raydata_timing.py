"""Timestamps from inside Ray Data LLM's engine stage, for its steady throughput.

Ray Data LLM hands a batch's rows on only when the whole batch is done, and with a one-block
input the postprocess sees every row only at the very end, so times taken after its engine
stage say nothing about when the engine worked. `install` swaps the processor's engine-stage
UDF for a subclass that stamps every output row with when its batch reached the UDF
(`t_submit`) and when the row came out of the engine (`t_out`). It measures and changes
nothing else. (A `worker_process_setup_hook` doing the same never let the engine actor start
on the GPU machines; a subclass needs no runtime environment.)
"""

from __future__ import annotations

import time

from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStageUDF

STAGE = "vLLMEngineStage"


class TimedvLLMEngineStageUDF(vLLMEngineStageUDF):
    async def udf(self, batch):
        t_submit = time.time()
        async for row in super().udf(batch):
            row["t_submit"] = t_submit
            row["t_out"] = time.time()
            yield row


def install(processor) -> None:
    """Time the processor's engine stage (Ray pickles the subclass by reference)."""
    stage = processor.get_stage_by_name(STAGE)
    if stage.fn is not vLLMEngineStageUDF:
        raise TypeError(f"{STAGE} runs {stage.fn!r}, not the vLLM engine UDF this wraps")
    # A copy, not an assignment: assigning re-runs the stage's validator, which has already
    # consumed the placement-group settings and would then ask for a GPU of its own.
    processor.stages[STAGE] = stage.model_copy(update={"fn": TimedvLLMEngineStageUDF})
