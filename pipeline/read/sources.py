"""Expand `input.path` (paths, globs, directories, URIs) into the list of files to read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError
from pipeline.storage import canonical_uri, get_fs, store_errors

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".frn", ".fas", ".seq")
FASTQ_SUFFIXES = (".fq", ".fastq")
COMPRESSED_SUFFIXES = (".gz", ".bgz", ".gzip")


@dataclass(frozen=True)
class Source:
    """One input file. `uri` is its identity: it names rows and goes into chunk ids."""

    uri: str
    size: int


def format_from_name(name: str) -> str | None:
    """fasta | fastq from a file name (compression suffix ignored), or None if unknown."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
            break
    if lower.endswith(FASTA_SUFFIXES):
        return "fasta"
    if lower.endswith(FASTQ_SUFFIXES):
        return "fastq"
    return None


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand_inputs(paths: Any, options: dict[str, Any] | None = None) -> list[Source]:
    """Resolve each path, glob or directory to files; missing input is an error naming it."""
    items = list(paths) if isinstance(paths, list | tuple) else [paths]
    sources: dict[str, Source] = {}
    for item in items:
        fs, path = get_fs(str(item), options)
        with store_errors(fs, f"listing the input {item}"):
            for source in _expand(str(item), fs, path):
                # A file named twice (a path and a glob that matches it) is read once.
                sources.setdefault(source.uri, source)
    return list(sources.values())


def _expand(item: str, fs: Any, path: str) -> list[Source]:
    """The files one input item names."""
    if _has_magic(path):
        found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not found:
            raise InputError(f"input {item!r}: no files match this pattern")
    elif fs.isdir(path):
        found = sorted(p for p in fs.find(path, maxdepth=1) if format_from_name(p) is not None)
        if not found:
            raise InputError(f"input {item!r}: directory holds no FASTA/FASTQ files")
    elif fs.exists(path):
        found = [path]
    else:
        raise InputError(f"input not found: {item}")
    return [Source(uri=canonical_uri(fs, p), size=int(fs.size(p) or 0)) for p in found]
