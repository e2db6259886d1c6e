"""BED intervals (plain or gzip/bgzip, local or any fsspec URI), validated line by line."""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import InputError
from pipeline.read.fastx import open_binary

_INT = re.compile(r"[+-]?[0-9]+")
_STRANDS = ("+", "-", ".")
_HEADER_WORDS = ("track", "browser")


@dataclass(frozen=True)
class Interval:
    index: int  # 0-based ordinal among the file's intervals (headers, comments, blanks not counted)
    line: int  # 1-based line number in the file (for error messages)
    seq_id: str
    start: int  # 0-based
    end: int  # exclusive
    name: str | None  # column 4 ('.' or absent -> None)
    score: float | None  # column 5 ('.' or absent -> None)
    strand: str  # column 6: '+', '-' or '.' ('.' when absent)


def _int(uri: str, lineno: int, what: str, text: str) -> int:
    # Stricter than int(): no '1_000', no spaces, no non-ASCII digits.
    if not _INT.fullmatch(text):
        raise InputError(f"{uri}:{lineno}: {what} {text!r} is not an integer")
    return int(text)


def _optional(fields: list[str], i: int) -> str | None:
    """Column i, or None where it is absent, empty or '.'."""
    if i >= len(fields) or fields[i] in ("", "."):
        return None
    return fields[i]


def _parse(uri: str, lineno: int, text: str) -> tuple | None:
    """(seq_id, start, end, name, score, strand) of one line; None for a line to skip."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#") or stripped.split(None, 1)[0] in _HEADER_WORDS:
        return None
    if "\t" in text:
        fields = [f.strip() for f in text.rstrip("\r\n").split("\t")]
    else:
        # BED is tab-separated, but hand-written files often use spaces: accept a line with no
        # tab at all when whitespace gives it the 3 columns it needs.
        fields = stripped.split()
    if len(fields) < 3:
        raise InputError(
            f"{uri}:{lineno}: {len(fields)} column(s), BED needs at least 3 "
            f"(chrom, start, end) separated by tabs: {stripped[:80]!r}"
        )
    seq_id = fields[0]
    if not seq_id:
        raise InputError(f"{uri}:{lineno}: empty chrom (column 1)")
    start = _int(uri, lineno, "start", fields[1])
    end = _int(uri, lineno, "end", fields[2])
    if start < 0:
        raise InputError(f"{uri}:{lineno}: start {start} is negative")
    if end == start:
        raise InputError(
            f"{uri}:{lineno}: zero-length interval {seq_id}:{start}-{end} "
            "(end == start): it holds no bases to embed"
        )
    if end < start:
        raise InputError(f"{uri}:{lineno}: end {end} is before start {start}")
    name = _optional(fields, 3)
    score_text = _optional(fields, 4)
    score = None
    if score_text is not None:
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(f"{uri}:{lineno}: score {score_text!r} is not a number")
    strand = _optional(fields, 5) or "."
    if strand not in _STRANDS:
        raise InputError(f"{uri}:{lineno}: strand {strand!r} is not '+', '-' or '.'")
    # Columns past the 6th (BED12, narrowPeak...) are not ours to check.
    return seq_id, start, end, name, score, strand


def iter_intervals(uri: str, storage_options: dict | None = None) -> Iterator[Interval]:
    """The intervals of a BED file, in file order; InputError naming `uri:line` on a bad one."""
    index = 0
    lineno = 0
    with open_binary(uri, storage_options, "BED file") as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{uri}:{lineno}: not text ({e})") from e
                parsed = _parse(uri, lineno, text)
                if parsed is None:
                    continue
                yield Interval(index, lineno, *parsed)
                index += 1
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise InputError(
                f"{uri}: truncated or corrupt gzip data after line {lineno} ({e})"
            ) from e
