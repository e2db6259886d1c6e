"""Small shared helpers: stable hashing, cache location, lazy imports."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any


def stable_hash(obj: Any, nbytes: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order and process."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=nbytes).hexdigest()


def cache_dir() -> Path:
    """Where generated models live: $DNAEMBED_CACHE, else ~/.cache/dnaembed."""
    root = os.environ.get("DNAEMBED_CACHE") or Path.home() / ".cache" / "dnaembed"
    return Path(root)


def require(module: str, hint: str) -> Any:
    """Import an optional heavy dependency, or fail saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed here: {hint}") from e
