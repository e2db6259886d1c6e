"""A FASTQ reader that survives a malformed record.

Biopython's FastqGeneralIterator stops at the first bad record. To skip bad records (and
count them) instead of losing the rest of the file, this reader follows the same rules —
multi-line sequence and quality, '@' allowed at the start of a quality line, quality length
equal to sequence length — and, at a malformed record, reports it and resynchronises on the
next header. On well-formed files it returns what Biopython returns (tested against it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Phred+33 quality characters, as Biopython's FASTQ parser accepts them ('!'..'~').
_BAD_QUALITY = re.compile(r"[^!-~]")


@dataclass(frozen=True)
class Malformed:
    index: int  # 0-based record number in the file
    title: str
    reason: str


class _Lines:
    """Line iterator with push-back, for resynchronising."""

    def __init__(self, lines: Iterable[str]):
        self._it = iter(lines)
        self._back: list[str] = []

    def next(self) -> str | None:
        if self._back:
            return self._back.pop()
        return next(self._it, None)

    def push(self, lines: list[str]) -> None:
        self._back.extend(reversed(lines))


def parse_fastq(lines: Iterable[str]) -> Iterator[tuple[str, str] | Malformed]:
    """Yield (title, sequence) per record, or Malformed for a record that is not one."""
    src = _Lines(lines)
    line = src.next()
    while line is not None and not line.strip():
        line = src.next()
    index = 0
    while line is not None:
        if not line.startswith("@"):
            bad = line
            line = src.next()
            while line is not None and not line.startswith("@"):
                line = src.next()
            yield Malformed(index, "", f"expected a '@' header line, found {bad[:40]!r}")
            index += 1
            continue
        title = line[1:].rstrip()
        seq_parts = []
        line = src.next()
        while line is not None and not line.startswith("+"):
            seq_parts.append(line.rstrip())
            line = src.next()
        if line is None:
            yield Malformed(index, title, "the file ends before the '+' line (record cut)")
            return
        second = line[1:].rstrip()
        seq = "".join(seq_parts)
        quality: list[str] = []
        qual_len = 0
        line = src.next()
        # As in Biopython: while quality is shorter than the sequence, every line is quality,
        # even one starting with '@'.
        while line is not None and (qual_len < len(seq) or not line.startswith("@")):
            quality.append(line.rstrip())
            qual_len += len(quality[-1])
            line = src.next()
        if second and second != title:
            yield Malformed(index, title, f"'+' line names {second!r}, the header {title!r}")
        elif " " in seq or "\t" in seq:
            yield Malformed(index, title, "whitespace inside the sequence")
        elif qual_len == len(seq) and (bad := _BAD_QUALITY.search("".join(quality))):
            yield Malformed(
                index,
                title,
                f"quality character {bad.group()!r} at position {bad.start()} (0-based) is "
                "outside '!'..'~'",
            )
        elif qual_len != len(seq):
            cut = _resync(quality, len(seq))
            if cut is not None:
                # A header swallowed as quality: the next record starts there.
                src.push([*(q + "\n" for q in quality[cut:]), *([line] if line else [])])
                line = src.next()
                qual_len = sum(len(q) for q in quality[:cut])
            reason = f"quality has {qual_len} characters, the sequence {len(seq)}"
            if line is None and qual_len < len(seq):
                reason += " (record cut at the end of the file)"
            yield Malformed(index, title, reason)
        else:
            yield title, seq
        index += 1


def _resync(quality: list[str], n: int) -> int | None:
    """Index of the first quality line (after the first) that starts a new record."""
    for k in range(1, len(quality)):
        if quality[k].startswith("@") and sum(len(q) for q in quality[:k]) != n:
            return k
    return None
