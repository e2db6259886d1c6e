"""Our model class in every vLLM process, through vLLM's `vllm.general_plugins` entry point.

vLLM calls every function of that entry-point group in each process it starts (engine core,
tensor-parallel workers) before it resolves a model's architecture. An installed dnaembed
declares the entry point in its metadata (pyproject.toml). A checkout that is not installed
(a Ray job's working_dir) has no metadata, so `make_discoverable` writes a minimal one and puts
it on the path the engine's processes inherit.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pipeline.embed.outputs import ARCHITECTURE
from pipeline.util import cache_dir

GROUP = "vllm.general_plugins"
NAME = "dnaembed"
TARGET = "pipeline.embed.plugin:register"
MODEL_CLASS = "pipeline.embed.model:DnaembedMixtralForEmbedding"


def register() -> None:
    """The entry point: add our architecture to vLLM's registry (by name: imported lazily,
    so a process that never builds it never imports torch for it)."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)


def declared() -> bool:
    return any(ep.value == TARGET for ep in entry_points(group=GROUP))


def make_discoverable(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Register here, and make sure processes started from here find the entry point."""
    register()
    if declared():
        return
    root = cache_dir() / "vllm-plugin"
    info = root / "dnaembed_vllm_plugin-0.dist-info"
    if not (info / "entry_points.txt").exists():
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: dnaembed-vllm-plugin\nVersion: 0\n"
        )
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n{NAME} = {TARGET}\n")
    # The package itself must be importable there too: the checkout's root.
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [str(root), package_root]
    current = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environ["PYTHONPATH"] = os.pathsep.join([*(p for p in paths if p not in current), *current])
    for p in paths:
        if p not in sys.path:
            sys.path.append(p)
