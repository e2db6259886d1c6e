"""dnaembed: DNA corpora -> embeddings from genomic language models served by vLLM.

Data path, one subpackage per stage: read -> window -> tokenize -> embed -> write -> load.
"""

from __future__ import annotations

from pipeline.load.loader import load_embeddings, read_manifest

__all__ = ["load_embeddings", "read_manifest", "run"]
__version__ = "0.1.0"


def run(cfg):
    from pipeline.run import run as _run

    return _run(cfg)
