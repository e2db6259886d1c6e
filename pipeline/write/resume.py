"""Resume and exactly-once: what is already committed, and proof that nothing is lost or doubled.

Every chunk id is a 128-bit hash. Stages report how many windows they made, skipped as already
committed, and wrote, with the sum (mod 2^64) of the first 64 bits of their ids. Equal counts
and equal sums on both sides mean the same set of windows, except with probability ~2^-64,
using constant memory however large the run.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.rows import CHUNK_ID
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.window.windows import ID_LEN, MASK, id_array, id_hash
from pipeline.write.layout import COMMITS, SHARD_PREFIX, SHARDS, OutputDir


@dataclass
class Committed:
    """Shards of earlier attempts at this run that can be kept as they are."""

    shards: list[dict] = field(default_factory=list)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=f"S{ID_LEN}"))
    hash: int = 0
    discarded: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.ids.size)


def _read_commit(out: OutputDir, path: str, fingerprint: str) -> tuple[dict, np.ndarray] | None:
    with out.fs.open(path, "rb") as f:
        commit = json.loads(f.read())
    shard = out.file(SHARDS, commit["shard"])
    if commit.get("fingerprint") != fingerprint or not out.fs.exists(shard):
        return None
    if out.fs.size(shard) != commit["bytes"]:
        return None
    ids = id_array(pq.read_table(shard, columns=["chunk_id"], filesystem=out.fs).column(0))
    if ids.size != commit["rows"]:
        return None
    return commit, ids


def scan_committed(out: OutputDir, fingerprint: str) -> Committed:
    """Committed shards whose files are whole; shards that overlap an earlier one are dropped."""
    out.fs.invalidate_cache()
    # Committed names only: a `.tmp-*` file is a write still in flight (a task of a killed
    # driver can outlive it) and may be renamed or half-written while we look.
    pattern = out.file(COMMITS, f"{SHARD_PREFIX}*.json")
    paths = sorted(out.fs.glob(pattern)) if out.exists(COMMITS) else []
    with ThreadPoolExecutor(16) as pool:
        found = [r for r in pool.map(lambda p: _read_commit(out, p, fingerprint), paths) if r]
    found.sort(key=lambda r: r[0]["shard"])
    all_ids = np.sort(np.concatenate([ids for _, ids in found])) if found else Committed().ids
    discarded = []
    if all_ids.size and (all_ids[1:] == all_ids[:-1]).any():
        # Rare: shards of two attempts overlap. Keep the first of each overlapping group;
        # the windows of the dropped ones that no kept shard holds are embedded again.
        seen: set[bytes] = set()
        kept = []
        for commit, ids in found:
            as_set = set(ids.tolist())
            if seen & as_set or len(as_set) != ids.size:
                discarded.append(commit["shard"])
                continue
            seen |= as_set
            kept.append((commit, ids))
        found = kept
        all_ids = np.sort(np.concatenate([ids for _, ids in found])) if found else Committed().ids
    commits = [c for c, _ in found]
    return Committed(commits, all_ids, sum(c["ids_hash"] for c in commits) & MASK, discarded)


class SkipCommitted(Stage):
    """Drops windows that a committed shard already holds, so a resumed run embeds the rest."""

    needs = (CHUNK_ID,)

    def __init__(self, done: Any, stats: StatsSink | None = None):
        self.done = done  # a Ray object ref (or the array itself) of sorted S32 ids
        self.stats = stats or StatsSink()

    def setup(self) -> None:
        if not isinstance(self.done, np.ndarray):
            import ray

            self.done = ray.get(self.done)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.ensure_setup()
        self.check_columns(batch)
        ids = id_array(batch.column("chunk_id"))
        hit = np.zeros(ids.size, dtype=bool)
        if self.done.size and ids.size:
            pos = np.minimum(np.searchsorted(self.done, ids), self.done.size - 1)
            hit = self.done[pos] == ids
        if batch.num_rows:
            self.stats.put(
                report_key("resume", batch.column("chunk_id")[0].as_py()),
                {"windows_resumed": int(hit.sum()), "windows_resumed_hash": id_hash(ids[hit])},
            )
        return batch.filter(pa.array(~hit))


def check_exactly_once(stats: dict, commits: list[dict], committed: Committed) -> None:
    """Every window made is in exactly one listed shard; otherwise no manifest is written."""
    resumed = stats.get("windows_resumed", 0)
    resumed_hash = stats.get("windows_resumed_hash", 0) & MASK
    if (resumed, resumed_hash) != (committed.rows, committed.hash):
        raise OutputError(
            f"the output holds {committed.rows} committed windows but this input makes only "
            f"{resumed} of them: the inputs changed since; rerun with output.mode=overwrite"
        )
    made, made_hash = stats.get("windows", 0), stats.get("windows_hash", 0) & MASK
    written = sum(c["rows"] for c in commits)
    written_hash = sum(c["ids_hash"] for c in commits) & MASK
    if made != written + resumed or made_hash != (written_hash + resumed_hash) & MASK:
        raise OutputError(
            f"{made} windows were made but {written} written and {resumed} resumed, or their "
            "ids differ: not writing a manifest; rerun the same command to finish"
        )
