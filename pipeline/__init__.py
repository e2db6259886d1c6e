"""dnaembed: DNA corpora -> embeddings from genomic language models served by vLLM.

Data path, one subpackage per stage: read -> window -> tokenize -> embed -> write -> load.
"""

from __future__ import annotations

from typing import Any

from pipeline.load.aggregate import aggregate_intervals, aggregate_records
from pipeline.load.labels import attach_labels, read_bed
from pipeline.load.loader import load_embeddings, read_manifest, region, shard_paths, to_numpy

__all__ = [
    "EmbeddingDataset",
    "EmbeddingIterableDataset",
    "aggregate_intervals",
    "aggregate_records",
    "attach_labels",
    "compose",
    "load_embeddings",
    "read_bed",
    "read_manifest",
    "region",
    "run",
    "shard_paths",
    "to_config",
    "to_numpy",
]
__version__ = "0.1.0"


def run(cfg: Any) -> Any:
    """Run the pipeline for a config: `run(to_config(compose(["model=tiny", ...])))`."""
    from pipeline.run import run as _run

    return _run(cfg)


def __getattr__(name: str) -> Any:
    if name in ("compose", "to_config"):
        from pipeline import config

        return getattr(config, name)
    # The torch datasets import torch: only when asked for.
    if name in ("EmbeddingDataset", "EmbeddingIterableDataset"):
        from pipeline.load import torch_data

        return getattr(torch_data, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
