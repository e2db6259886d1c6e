"""dnaembed: DNA corpora -> embeddings from genomic language models served by vLLM.

Data path, one subpackage per stage: read -> window -> tokenize -> embed -> write -> load.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EmbeddingDataset",
    "EmbeddingIterableDataset",
    "aggregate_intervals",
    "aggregate_records",
    "attach_labels",
    "compose",
    "duckdb_view",
    "load_embeddings",
    "load_track",
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


# Where each public name lives. Imported on first use: every Ray worker imports this package
# to unpickle a stage, and the loaders' imports (pandas, pyarrow.dataset; torch for the
# datasets) cost each of them most of a second.
_LAZY = {
    "compose": "pipeline.compose",
    "to_config": "pipeline.compose",
    "aggregate_intervals": "pipeline.load.aggregate",
    "aggregate_records": "pipeline.load.aggregate",
    "attach_labels": "pipeline.load.labels",
    "read_bed": "pipeline.load.labels",
    "duckdb_view": "pipeline.load.sql",
    "load_embeddings": "pipeline.load.loader",
    "read_manifest": "pipeline.load.loader",
    "region": "pipeline.load.loader",
    "shard_paths": "pipeline.load.loader",
    "to_numpy": "pipeline.load.loader",
    "load_track": "pipeline.load.tracks",
    "EmbeddingDataset": "pipeline.load.torch_data",
    "EmbeddingIterableDataset": "pipeline.load.torch_data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
