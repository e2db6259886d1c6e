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
