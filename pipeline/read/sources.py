"""Expand `input.path` (paths, globs, directories, URIs) into the list of files to read."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
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


# Files that sit beside a FASTA to index it: passed over in a directory without a word.
INDEX_SUFFIXES = (".fai", ".gzi")
NAMES_SHOWN = 5  # passed-over names a note shows


@dataclass
class Inputs:
    """The files an input names, and a note per directory on what it passed over."""

    sources: list[Source] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand_inputs(paths: Any, options: dict[str, Any] | None = None) -> list[Source]:
    """Resolve each path, glob or directory to files; missing input is an error naming it."""
    return find_inputs(paths, options).sources


def find_inputs(paths: Any, options: dict[str, Any] | None = None) -> Inputs:
    """`expand_inputs`, with a note for each directory: how many files it gave and which
    it passed over (a directory is searched at every depth for FASTA/FASTQ names)."""
    items = list(paths) if isinstance(paths, list | tuple) else [paths]
    sources: dict[str, Source] = {}
    notes = []
    for item in items:
        fs, path = get_fs(str(item), options)
        with store_errors(fs, f"listing the input {item}"):
            found, note = _expand(str(item), fs, path)
        for source in found:
            # A file named twice (a path and a glob that matches it) is read once.
            sources.setdefault(source.uri, source)
        if note:
            notes.append(note)
    return Inputs(list(sources.values()), notes)


def _expand(item: str, fs: Any, path: str) -> tuple[list[Source], str | None]:
    """The files one input item names, and a note on what a directory passed over."""
    note = None
    if _has_magic(path):
        found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not found:
            raise InputError(f"input {item!r}: no files match this pattern")
    elif fs.isdir(path):
        found, passed = _walk(fs, path)
        if not found:
            shown = _names(passed, path)
            raise InputError(
                f"input {item!r}: directory holds no FASTA/FASTQ files (looked at every depth "
                f"for names ending {_suffixes()}{'; found ' + shown if passed else ''})"
            )
        note = f"input {item}: {_files(len(found))} taken" + (
            f", {_files(len(passed))} passed over ({_names(passed, path)}): a directory gives "
            f"the files named {_suffixes()} outside hidden (.name) folders; name any other "
            "file itself"
            if passed
            else ""
        )
    elif fs.exists(path):
        found = [path]
    else:
        raise InputError(f"input not found: {item}")
    return [Source(uri=canonical_uri(fs, p), size=int(fs.size(p) or 0)) for p in found], note


def _walk(fs: Any, path: str) -> tuple[list[str], list[str]]:
    """(FASTA/FASTQ files, other files) under a directory, at every depth, sorted. Hidden
    files and folders (`.name`: editor and notebook copies) are passed over; index files
    beside a FASTA are neither."""
    taken, passed = [], []
    for p in sorted(fs.find(path)):
        rel = posixpath.relpath(p, path)
        hidden = any(part.startswith(".") for part in rel.split("/"))
        if format_from_name(p) is not None and not hidden:
            taken.append(p)
        elif not p.endswith(INDEX_SUFFIXES):
            passed.append(p)
    return taken, passed


def _names(paths: list[str], root: str) -> str:
    rel = [posixpath.relpath(p, root) for p in paths[:NAMES_SHOWN]]
    more = f", and {len(paths) - NAMES_SHOWN} more" if len(paths) > NAMES_SHOWN else ""
    return ", ".join(rel) + more


def _files(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


def _suffixes() -> str:
    return "/".join(FASTA_SUFFIXES + FASTQ_SUFFIXES) + " (optionally .gz/.bgz)"
