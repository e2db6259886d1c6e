"""The manifest: what a complete run wrote, written last from the shards' commit records."""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.errors import OutputError
from pipeline.write.layout import (
    COMMITS,
    FORMAT,
    MANIFEST,
    RUN,
    SHARD_PREFIX,
    SHARDS,
    OutputDir,
    Survey,
)

log = logging.getLogger(__name__)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def claim_output(out: OutputDir, fingerprint: str, fields: dict, mode: str) -> dict | None:
    """Make `out` ours, or refuse. Returns the existing manifest if this exact run is complete.

    Every mode refuses a directory holding anything a run does not write. An earlier run of
    another config that committed nothing (it failed before its first shard) is no run to
    keep: its record is replaced. Outputs of the earlier layout are renamed first."""
    survey: Survey | None = out.check_only_ours()
    if survey.legacy:
        moved = out.migrate_legacy(survey)
        survey = None  # the names changed
        log.warning(
            "output %s was written by an earlier dnaembed version: renamed %s to the current "
            "layout (the run's own files start with _)",
            out.uri,
            ", ".join(moved),
        )
    if mode == "overwrite":
        out.remove_run(survey)
    owner = None
    if out.exists(MANIFEST):
        owner = out.read_json(MANIFEST)
    elif out.exists(RUN):
        owner = out.read_json(RUN)
    if owner is not None:
        if owner.get("fingerprint") != fingerprint:
            if out.exists(MANIFEST) or has_commits(out):
                keys = differing_keys(owner.get("fingerprint_fields", {}), fields)
                raise OutputError(
                    f"output {out.uri} holds a run with a different config (differs in: "
                    f"{', '.join(keys) or 'format'}); choose another output or pass "
                    "output.mode=overwrite to replace it"
                )
            log.info("output %s: an earlier run committed nothing; replacing its record", out.uri)
        elif out.exists(MANIFEST):
            return owner
    out.write_json(
        {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "fingerprint_fields": fields,
            "started": time.time(),
        },
        RUN,
    )
    return None


def has_commits(out: OutputDir) -> bool:
    """Whether any shard of the output was committed (by any config)."""
    out.fs.invalidate_cache(out.path)
    return out.exists(COMMITS) and bool(out.fs.glob(out.file(COMMITS, f"{SHARD_PREFIX}*.json")))


def build_manifest(
    *,
    fingerprint: str,
    fields: dict,
    model: dict,
    commits: list[dict],
    stats: dict,
    elapsed_s: float,
    embeddings: list[dict],
    strands: str,
    kind: str = "tiles",
    scores: list[dict] | None = None,
    coordinates: str = "0-based half-open [start, end) on the forward strand (BED)",
) -> dict:
    """`embeddings`: {column, layer, pooling} per embedding column, layer non-negative;
    `kind`: what was read (pipeline/kinds/), with its `coordinates` and `scores` (its score
    columns)."""
    shards = sorted(commits, key=lambda c: c["shard"])
    names = [c["shard"] for c in shards]
    if len(set(names)) != len(names):
        raise OutputError("two commits name the same shard; refusing to write the manifest")
    dims = {c["dim"] for c in shards}
    if len(dims) > 1:
        raise OutputError(f"shards disagree on the embedding dimension: {sorted(dims)}")
    rows = sum(c["rows"] for c in shards)
    tokens = sum(c["tokens"] for c in shards)
    skipped = sorted(
        stats.get("skipped", []),
        key=lambda s: (s["source"], s["seq_id"], s.get("start", 0), s.get("pos", 0)),
    )
    records = stats.get("records", 0)
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "fingerprint_fields": fields,
        "model": model,
        "input": kind,
        "embeddings": embeddings,
        **({"scores": scores} if scores else {}),
        "strands": strands,
        "dim": dims.pop() if dims else None,
        "embedding_dtype": "float32",
        "coordinates": coordinates,
        "shards": [
            {
                "path": f"{SHARDS}/{c['shard']}",
                "rows": c["rows"],
                "bytes": c["bytes"],
                "sha256": c["sha256"],
            }
            for c in shards
        ],
        "counts": {
            "inputs": len(stats.get("inputs", [])),
            "records": records,
            "records_skipped": len(skipped),
            "records_embedded": records - len(skipped),
            "bases": stats.get("bases", 0),
            "bases_uncovered": stats.get("bases_uncovered", 0),
            "windows": rows,
            "windows_skipped_n": stats.get("windows_skipped_n", 0),
            "windows_dropped": stats.get("windows_dropped", 0),
            "windows_resumed": stats.get("windows_resumed", 0),
            "windows_embedded": stats.get("windows_embedded", 0),
            "engine_requests": stats.get("engine_requests", 0),
            # Tokens submitted to the engines, and those they computed (a cached prefix's
            # are not: a variant's alternates share their reference's, when scoring alone).
            "engine_tokens": stats.get("engine_tokens", 0),
            "engine_tokens_computed": stats.get("engine_tokens_computed", 0),
            "engine_requests_shared": stats.get("engine_requests_shared", 0),
            "tokens": tokens,
            # Object-store requests that failed and were retried (throttling, 5xx, dropped
            # connections): by the read and write tasks and the driver.
            "storage_retries": stats.get("storage_retries", 0)
            + sum(c.get("storage_retries") or 0 for c in commits),
        },
        "skipped_records": skipped,
        "input_errors": sorted(stats.get("input_errors", []), key=lambda e: e["uri"]),
        "engine": engine_timing(stats),
        "inputs": sorted(stats.get("inputs", []), key=lambda s: s["uri"]),
        "elapsed_s": round(elapsed_s, 3),
        "created": time.time(),
    }


def engine_timing(stats: dict) -> dict:
    """How busy the engines were: steady throughput is tokens over the span from the first
    pack's start to the last pack's end, engine start excluded."""
    t0, t1 = stats.get("engine_t0", []), stats.get("engine_t1", [])
    span = max(t1) - min(t0) if t0 and t1 else 0.0
    tokens = stats.get("engine_tokens", 0)
    out = {
        "packs": len(t0),
        "tokens": tokens,
        "busy_s": round(stats.get("engine_busy_s", 0.0), 3),
        "span_s": round(span, 3),
        "tokens_per_s": round(tokens / span, 1) if span > 0 else None,
        # Wall-clock (epoch) seconds, so a run's start-up can be read against its launch.
        "first_pack_t0": round(min(t0), 3) if t0 else None,
        "first_pack_t1": round(min(t1), 3) if t1 else None,
        "starts": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
            for s in sorted(stats.get("engine_starts", []), key=lambda s: s["t0"])
        ],
    }
    packs = sorted(stats.get("engine_packs", []), key=lambda k: k["t0"])
    if packs and len(packs) <= MAX_PACKS_LISTED:
        # Each pack's own rate: where a run is slower than its engine, this shows which packs.
        out["per_pack"] = [
            {
                "engine": k.get("engine"),
                "start_s": round(k["t0"] - packs[0]["t0"], 3),
                "s": round(k["s"], 3),
                "windows": k["windows"],
                "tokens": k["tokens"],
                "tokens_per_s": round(k["tokens"] / k["s"], 1) if k["s"] > 0 else None,
            }
            for k in packs
        ]
    return out


MAX_PACKS_LISTED = 2048  # beyond this the manifest keeps only the totals
