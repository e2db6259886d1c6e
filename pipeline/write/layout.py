"""Where things live in an output directory. Every reader and writer goes through here.

<output>/manifest.json      written last: the run is complete iff it exists
<output>/lease.json         while a driver runs: who it is (pipeline/write/lease.py)
<output>/run.json           written first: fingerprint of the config that owns this output
<output>/config.yaml        the resolved config
<output>/shards/part-*.parquet
<output>/commits/part-*.parquet.json   one per shard, written right after it
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.storage import get_fs, is_local, join, write_atomic

# Every output row: these columns, then one fixed_size_list<float32>[D] column per embedding
# (`embedding` by default; the manifest lists them).
OUTPUT_COLUMNS = ("chunk_id", "source", "seq_id", "start", "end", "strand", "n_tokens")
# Rows within a shard, and a sorted load, follow genomic order.
SORT_KEYS = [(k, "ascending") for k in ("source", "seq_id", "start", "end", "strand")]
# The same per kind of input (manifest "input"); the chunk id breaks ties (a BED file may
# list one interval twice, a VCF one allele twice).
ROW_ORDER = {
    "tiles": SORT_KEYS,
    "regions": [*SORT_KEYS, ("chunk_id", "ascending")],
    "variants": [
        (k, "ascending") for k in ("source", "seq_id", "pos", "ref", "alt", "strand", "chunk_id")
    ],
}


def row_order(manifest: dict) -> list[tuple[str, str]]:
    """How a run's rows are ordered (runs before regions and variants tiled files)."""
    return ROW_ORDER[manifest.get("input", "tiles")]


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, D] vectors as an embedding column: fixed_size_list<float32>[D]."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


MANIFEST = "manifest.json"
RUN = "run.json"
LEASE = "lease.json"
CONFIG = "config.yaml"
SHARDS = "shards"
COMMITS = "commits"
SHARD_PREFIX = "part-"  # a committed name; writes in flight are `.tmp-*`
FORMAT = "dnaembed/1"


@dataclass
class OutputDir:
    uri: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.fs, self.path = get_fs(self.uri, self.storage_options)

    def file(self, *parts: str) -> str:
        return join(self.path, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.file(*parts))

    def read_json(self, *parts: str) -> dict:
        with self.fs.open(self.file(*parts), "rb") as f:
            return json.loads(f.read())

    def write_json(self, obj: Any, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), json.dumps(obj, indent=2, sort_keys=True).encode())

    def write_bytes(self, data: bytes, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), data)

    def remove_run(self) -> list[str]:
        """Delete a previous run's own files (manifest first), and nothing else: refuse, naming
        what was found, where the path holds anything a dnaembed run does not write, or holds
        files but no run record. Returns what was deleted."""
        self.fs.invalidate_cache(self.path)
        if not self.fs.exists(self.path):
            return []
        if self.fs.isfile(self.path):
            raise OutputError(f"output {self.uri} is a file, not a directory: not overwriting it")
        top = self.fs.ls(self.path, detail=True)
        files, foreign = [], []
        names = {posixpath.basename(e["name"].rstrip("/")): e for e in top}
        for name, entry in names.items():
            if entry["type"] == "directory" and name in (SHARDS, COMMITS):
                inner, odd = self._run_files(entry["name"], name)
                files += inner
                foreign += odd
            elif entry["type"] != "directory" and (name in OWN_FILES or _in_flight(name)):
                files.append(entry["name"])
            else:
                foreign.append(name + ("/" if entry["type"] == "directory" else ""))
        if foreign:
            shown = ", ".join(sorted(foreign)[:5])
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise OutputError(
                f"output.mode=overwrite: {self.uri} holds files a dnaembed run did not write "
                f"({shown}{more}); nothing was deleted. Choose another output, or remove them"
            )
        # The lease is the running driver's own: it makes no directory a run.
        files = [f for f in files if posixpath.basename(f) != LEASE]
        if files and not ({RUN, MANIFEST} & set(names)):
            raise OutputError(
                f"output.mode=overwrite: {self.uri} holds {', '.join(sorted(names)[:5])} but no "
                f"{RUN} or {MANIFEST} of a dnaembed run; nothing was deleted"
            )
        # The manifest first: an overwrite cut short leaves an incomplete run, never a manifest
        # listing deleted shards.
        doomed = sorted(files, key=lambda f: (posixpath.basename(f) != MANIFEST, f))
        if doomed:
            self.fs.rm(doomed[:1])
            if doomed[1:]:
                self.fs.rm(doomed[1:])
        for sub in (SHARDS, COMMITS):
            if sub in names and is_local(self.fs):
                with contextlib.suppress(OSError):
                    os.rmdir(self.file(sub))
        return doomed

    def _run_files(self, path: str, sub: str) -> tuple[list[str], list[str]]:
        """(our files, anything else) directly under shards/ or commits/."""
        suffix = ".parquet" if sub == SHARDS else ".parquet.json"
        ours, odd = [], []
        for e in self.fs.ls(path, detail=True):
            name = posixpath.basename(e["name"].rstrip("/"))
            if e["type"] != "directory" and (
                (name.startswith(SHARD_PREFIX) and name.endswith(suffix)) or _in_flight(name)
            ):
                ours.append(e["name"])
            else:
                odd.append(f"{sub}/{name}" + ("/" if e["type"] == "directory" else ""))
        return ours, odd


# What a run writes at the top of its output (shards/ and commits/ hold part-* files).
OWN_FILES = frozenset({MANIFEST, RUN, CONFIG, LEASE})


def _in_flight(name: str) -> bool:
    """A write in flight or abandoned by a killed writer (pipeline.storage.write_atomic)."""
    return name.startswith(".tmp-")
