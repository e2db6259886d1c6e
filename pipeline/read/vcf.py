"""VCF variants through cyvcf2 (htslib): plain or bgzip, local or any fsspec URI.

Each ALT of a record becomes one `Variant` (a sequence change we can apply to a reference) or
one `SkippedVariant` saying why not (symbolic, breakend, spanning deletion, missing, not DNA).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import cyvcf2

from pipeline.errors import InputError
from pipeline.storage import is_local, require_file

_DNA = re.compile(r"[ACGTN]+")


@dataclass(frozen=True)
class Variant:
    record: int  # 0-based ordinal of the VCF record in the file
    alt_index: int  # 0-based index of this ALT among the record's ALTs
    seq_id: str
    pos: int  # 1-based, as in the VCF
    id: str | None  # the ID column ('.' -> None; several IDs stay one ';'-separated string)
    ref: str  # upper-cased
    alt: str  # upper-cased


@dataclass(frozen=True)
class SkippedVariant:
    """An ALT (or a record without ALT: alt_index and alt None) we cannot embed, and why."""

    record: int
    alt_index: int | None
    seq_id: str
    pos: int
    id: str | None
    ref: str  # as written in the file
    alt: str | None  # as written (a breakend's contig name keeps its case)
    reason: str


def _skip_reason(ref: str, alt: str) -> str | None:
    """Why the ALT `alt` of a record with REF `ref` is not a sequence change; None if it is."""
    if alt in ("", "."):
        return "missing ALT allele"
    if alt == "*":
        return "spanning deletion allele * (the position is deleted by another variant)"
    if "<" in alt:
        return f"symbolic allele {alt}"
    if "[" in alt or "]" in alt:
        return f"breakend {alt}"
    if len(alt) > 1 and (alt.startswith(".") or alt.endswith(".")):
        return f"single breakend {alt}"
    upper_ref, upper_alt = ref.upper(), alt.upper()
    if not _DNA.fullmatch(upper_ref):
        return f"REF allele {ref} is not a DNA sequence (A, C, G, T, N)"
    if not _DNA.fullmatch(upper_alt):
        return f"ALT allele {alt} is not a DNA sequence (A, C, G, T, N)"
    if upper_alt == upper_ref:
        return f"ALT allele {alt} equals REF: no change"
    return None


@contextlib.contextmanager
def _local_path(uri: str, storage_options: dict | None) -> Iterator[str]:
    """A local path to the file: itself, or a temporary copy of a remote one (htslib opens
    remote files on its own, without our fsspec settings)."""
    fs, path = require_file(uri, storage_options, "VCF")
    if is_local(fs):
        yield path
        return
    # Keep the name's suffixes: nothing depends on them, but messages stay recognisable.
    fd, tmp = tempfile.mkstemp(prefix="dnaembed-", suffix="-" + posixpath.basename(path))
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        os.unlink(tmp)


def _open(uri: str, path: str) -> cyvcf2.VCF:
    try:
        # lazy: a record is parsed only as far as we read it; samples=[]: no genotypes.
        return cyvcf2.VCF(path, lazy=True, samples=[])
    except Exception as e:  # cyvcf2 raises bare Exception/OSError for every failure
        raise InputError(f"cannot read VCF {uri}: {e}") from e


def iter_variants(
    uri: str, storage_options: dict | None = None
) -> Iterator[Variant | SkippedVariant]:
    """One Variant or SkippedVariant per ALT of each record, in file and ALT order."""
    with _local_path(uri, storage_options) as path:
        vcf = _open(uri, path)
        try:
            records = iter(vcf)
            n = 0
            while True:
                try:
                    rec = next(records)
                except StopIteration:
                    break
                except Exception as e:
                    # htslib prints its detail (the bad field) on stderr; this names the place.
                    raise InputError(
                        f"{uri}: cannot parse VCF data line {n + 1} "
                        f"(counting after the header): {e}"
                    ) from e
                yield from _split(n, rec)
                n += 1
        finally:
            vcf.close()


def _split(n: int, rec: cyvcf2.Variant) -> Iterator[Variant | SkippedVariant]:
    seq_id, pos, vid, ref = rec.CHROM, rec.POS, rec.ID, rec.REF
    alts = rec.ALT
    if not alts:
        yield SkippedVariant(n, None, seq_id, pos, vid, ref, None, "no ALT allele")
        return
    for i, alt in enumerate(alts):
        reason = _skip_reason(ref, alt)
        if reason is None:
            yield Variant(n, i, seq_id, pos, vid, ref.upper(), alt.upper())
        else:
            yield SkippedVariant(n, i, seq_id, pos, vid, ref, alt, reason)
