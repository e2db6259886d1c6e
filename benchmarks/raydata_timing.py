"""Timestamps from inside Ray Data LLM's engine stage, for its steady throughput.

Ray Data LLM hands a batch's rows on only when the whole batch is done, so times taken after
its engine stage say little about when the engine worked. Installed as the job's
`worker_process_setup_hook`, this wraps the engine stage's UDF, in the workers that import it,
to stamp every output row with when its batch reached the UDF (`t_submit`) and when the row
came out of the engine (`t_out`). It measures and changes nothing else.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import time

TARGET = "ray.llm._internal.batch.stages.vllm_engine_stage"


def _patch(module) -> None:
    cls = module.vLLMEngineStageUDF
    if getattr(cls, "_dnaembed_timed", False):
        return
    original = cls.udf

    async def udf(self, batch):
        t_submit = time.time()
        async for row in original(self, batch):
            row["t_submit"] = t_submit
            row["t_out"] = time.time()
            yield row

    cls.udf = udf
    cls._dnaembed_timed = True


class _Finder(importlib.abc.MetaPathFinder):
    """Patches the engine stage's module as it is imported (only engine workers import it)."""

    busy = False

    def find_spec(self, name, path, target=None):
        if name != TARGET or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
