"""Parse FASTA/FASTQ (plain or gzip, any fsspec URI) into validated, normalised records.

Parsing is Biopython's; this module adds what a pipeline needs around it: format and
compression sniffing, sequence ids, duplicate detection, IUPAC validation, and errors that
name the file, the record and the position.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from Bio.SeqIO.FastaIO import SimpleFastaParser

from pipeline.config import IUPAC_DNA
from pipeline.errors import InputError
from pipeline.read.fastq import Malformed, parse_fastq
from pipeline.read.sources import format_from_name
from pipeline.storage import get_fs, store_errors

_INVALID = re.compile(f"[^{IUPAC_DNA}]")
_AMBIGUITY_TO_N = str.maketrans({c: "N" for c in IUPAC_DNA if c not in "ACGTN"})
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 4096


class InvalidBase(InputError):
    """A character outside IUPAC DNA, at `position` of its record (0-based)."""

    def __init__(self, message: str, position: int, char: str):
        super().__init__(message)
        self.position, self.char = position, char

    def __reduce__(self):  # Ray pickles it from a task to the driver: keep every field
        return type(self), (str(self), self.position, self.char)


@dataclass(frozen=True)
class Record:
    seq_id: str
    sequence: str  # uppercase, validated, normalised as configured
    index: int  # 0-based position of the record in its file


@dataclass(frozen=True)
class Skipped:
    """A record left out under input.on_error=skip, and why."""

    index: int
    seq_id: str
    reason: str


@contextlib.contextmanager
def open_binary(
    uri: str, options: dict[str, Any] | None = None, what: str = "input"
) -> Iterator[io.BufferedIOBase]:
    """Open a file for reading, decompressing gzip (detected by magic bytes, not by name, so
    .gz, .bgz or no suffix; every member of a bgzip file). `what` names it when missing."""
    fs, path = get_fs(uri, options)
    # An object store that stays down (after its retries) fails naming its endpoint.
    with store_errors(fs, f"reading {uri}"):
        try:
            raw = fs.open(path, "rb")
        except FileNotFoundError as e:
            raise InputError(f"{what} not found: {uri}") from e
        with raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    yield gz
            else:
                yield raw


def sniff_format(uri: str, options: dict[str, Any] | None = None) -> str | None:
    """fasta | fastq from the first non-blank byte; None for an empty file."""
    # Read only as far as the first byte that is not blank: a truncated gzip file must fail
    # where its data ends, after the records before that point, not here.
    head = b""
    with _decode_errors(uri), open_binary(uri, options) as f:
        while not head:
            block = f.read(_SNIFF_BYTES)
            if not block:
                break
            head = block.lstrip()
    if not head:
        return None
    if head[:1] == b">":
        return "fasta"
    if head[:1] == b"@":
        return "fastq"
    hint = format_from_name(uri)
    raise InputError(
        f"{uri}: not FASTA or FASTQ (first byte {head[:1]!r}, expected '>' or '@')"
        + (f"; its name says {hint}" if hint else "")
    )


@contextlib.contextmanager
def _decode_errors(uri: str) -> Iterator[None]:
    """Turn decompression failures into an error naming the file."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"{uri}: truncated or corrupt gzip data ({e})") from e


def normalise(
    seq: str,
    seq_id: str,
    uri: str,
    invalid_chars: str,
    ambiguity_codes: str,
    rna: str = "error",
    offset: int = 0,
) -> str:
    """Uppercase (soft-masked bases count as bases), U to T for RNA if asked, validate IUPAC,
    map codes to N. `offset`: where `seq` starts in its record (errors name record positions)."""
    seq = seq.upper()
    if rna == "to_t":
        seq = seq.replace("U", "T")
    bad = _INVALID.search(seq)
    if bad is not None:
        if invalid_chars == "error":
            hint = (
                "set input.rna=to_t to read RNA"
                if bad.group() == "U"
                else ("fix the input or set input.invalid_chars=to_n")
            )
            raise InvalidBase(
                f"{uri}: record {seq_id!r} has {bad.group()!r} at position {offset + bad.start()} "
                f"(0-based), outside IUPAC DNA; {hint}",
                offset + bad.start(),
                bad.group(),
            )
        seq = _INVALID.sub("N", seq)
    if ambiguity_codes == "to_n":
        seq = seq.translate(_AMBIGUITY_TO_N)
    return seq


def iter_records(
    uri: str,
    fmt: str = "auto",
    invalid_chars: str = "error",
    ambiguity_codes: str = "to_n",
    options: dict[str, Any] | None = None,
    on_error: str = "error",
    rna: str = "error",
) -> Iterator[Record | Skipped]:
    """Yield the records of one file; errors name file, record and reason.

    With on_error="skip", a malformed record, a duplicate id, an empty header or a character
    outside IUPAC DNA yields Skipped (with the reason) instead of raising. Errors of the whole
    file (truncated gzip, not FASTA/FASTQ, empty) still raise InputError.
    """
    found = sniff_format(uri, options)
    if found is None:
        raise InputError(f"{uri}: no FASTA/FASTQ records (the file is empty)")
    if fmt != "auto" and fmt != found:
        raise InputError(f"{uri}: input.format={fmt} but the file is {found}")

    seen: set[str] = set()
    index = -1
    with _decode_errors(uri), open_binary(uri, options) as f:
        # latin-1 decodes every byte, so a stray byte reaches the validator, which names
        # its record and position, instead of failing somewhere inside the decoder.
        text = io.TextIOWrapper(f, encoding="latin-1", newline=None)
        parsed = SimpleFastaParser(text) if found == "fasta" else parse_fastq(text)
        for index, item in enumerate(parsed):
            try:
                if isinstance(item, Malformed):
                    raise InputError(
                        f"{uri}: malformed fastq record {index} (0-based)"
                        + (f" {item.title.split(None, 1)[0]!r}" if item.title.strip() else "")
                        + f": {item.reason}"
                    )
                title, seq = item
                seq_id = title.split(None, 1)[0] if title.strip() else ""
                if not seq_id:
                    raise InputError(f"{uri}: record {index} has an empty header")
                if seq_id in seen:
                    raise InputError(f"{uri}: duplicate sequence id {seq_id!r} (record {index})")
                seen.add(seq_id)
                seq = normalise(seq, seq_id, uri, invalid_chars, ambiguity_codes, rna)
            except InputError as e:
                if on_error != "skip":
                    raise
                title = item.title if isinstance(item, Malformed) else item[0]
                name = title.split(None, 1)[0] if title.strip() else f"#{index}"
                yield Skipped(index, name, str(e).removeprefix(f"{uri}: "))
                continue
            yield Record(seq_id, seq, index)
    if index < 0:
        raise InputError(f"{uri}: no FASTA/FASTQ records found")


@dataclass(frozen=True)
class Part:
    """A record, or part of one (a record too long to hold at once): its bases from `offset`,
    and the record's whole length where this part ends it (None: more follows)."""

    seq_id: str
    index: int
    offset: int
    sequence: str
    length: int | None


_BLOCK_BYTES = 1 << 20
_WHITESPACE = b" \t\r\n\v\f"


def iter_fasta_parts(
    uri: str,
    size: int,
    step: int,
    part_bases: int | None,
    invalid_chars: str = "error",
    ambiguity_codes: str = "to_n",
    options: dict[str, Any] | None = None,
    rna: str = "error",
) -> Iterator[Part]:
    """The records of one FASTA file, streamed: a record longer than `part_bases` comes in
    parts, each holding the windows (of `size` every `step`) that start in it, so memory is
    bounded by the part, not by the record or the file. Parts start at multiples of `step`
    and overlap by the windows' overhang; every base is validated once, as it is read.
    `part_bases=None`: whole records. Errors are iter_records' (file, record, position)."""
    span = part_bases and max(step, part_bases // step * step)
    overhang = max(0, size - step)
    seen: set[str] = set()
    index = -1
    seq_id = ""
    chunks: list[str] = []  # the buffered bases, from `cut` of the current record
    held = 0  # bases in chunks
    cut = 0  # where the buffer starts in the record
    read = 0  # bases of the record read so far

    def flush(final: bool) -> Iterator[Part]:
        nonlocal chunks, held, cut
        if final:
            yield Part(seq_id, index, cut, "".join(chunks), read)
            chunks, held, cut = [], 0, 0
            return
        # Hand on a part only when the record surely goes on a window past it: the final
        # window (window.last=shift moves it left by up to a window), and the record's
        # length, stay with the last part.
        while span and held > span + overhang + size:
            seq = "".join(chunks)
            yield Part(seq_id, index, cut, seq[: span + overhang], None)
            rest = seq[span:]
            chunks, held, cut = [rest], len(rest), cut + span

    def header(line: bytes) -> None:
        nonlocal seq_id, index, read
        title = line.decode("latin-1").rstrip()
        index += 1
        seq_id = title.split(None, 1)[0] if title.strip() else ""
        if not seq_id:
            raise InputError(f"{uri}: record {index} has an empty header")
        if seq_id in seen:
            raise InputError(f"{uri}: duplicate sequence id {seq_id!r} (record {index})")
        seen.add(seq_id)
        read = 0

    def bases(raw: bytes) -> None:
        nonlocal held, read
        raw = raw.translate(None, _WHITESPACE)
        if raw:
            text = normalise(
                raw.decode("latin-1"), seq_id, uri, invalid_chars, ambiguity_codes, rna, read
            )
            chunks.append(text)
            held += len(text)
            read += len(text)

    with _decode_errors(uri), open_binary(uri, options) as f:
        for is_header, raw in _segments(f):
            if is_header:
                if index >= 0:
                    yield from flush(final=True)
                header(raw)
            elif index >= 0:  # text before the first header is not a record's
                bases(raw)
                yield from flush(final=False)
        if index >= 0:
            yield from flush(final=True)
    if index < 0:
        raise InputError(f"{uri}: no FASTA/FASTQ records found")


def scan_contigs(uri: str, options: dict[str, Any] | None = None) -> list[tuple[str, int]]:
    """(name, bases) of every record of a FASTA file, in file order, by one pass over its
    bytes (no index): what a run over a whole genome must know before it starts (contig
    sizes, duplicate names). Bases are the record's bytes less whitespace, unvalidated."""
    out: list[list] = []
    with _decode_errors(uri), open_binary(uri, options) as f:
        for is_header, raw in _segments(f):
            if is_header:
                title = raw.decode("latin-1").strip()
                out.append([title.split(None, 1)[0] if title else "", 0])
            elif out:
                out[-1][1] += len(raw) - sum(raw.count(c) for c in (b"\n", b"\r", b" ", b"\t"))
    return [(name, n) for name, n in out]


def _segments(f: io.BufferedIOBase) -> Iterator[tuple[bool, bytes]]:
    """A FASTA stream in file order, one block at a time: (True, a header line's text after
    its '>', without the line end) or (False, bytes between headers, line ends included)."""
    carry = b""  # an unfinished header line
    at_line_start = True
    while True:
        block = f.read(_BLOCK_BYTES)
        if not block:
            break
        block, carry = carry + block, b""
        i = 0
        while i < len(block):
            if at_line_start and block[i : i + 1] == b">":
                nl = block.find(b"\n", i)
                if nl < 0:
                    carry = block[i:]
                    break
                yield True, block[i + 1 : nl]
                i = nl + 1
                continue
            nxt = block.find(b"\n>", i)
            end = len(block) if nxt < 0 else nxt + 1
            yield False, block[i:end]
            at_line_start = block[end - 1 : end] == b"\n"
            i = end
    if carry:
        yield True, carry[1:]
