"""Random access to an indexed reference FASTA (plain or bgzip, local or any fsspec URI).

Reading is pyfaidx's. It takes an `fsspec.core.OpenFile`, so an `s3://` reference is read by
byte ranges through our own fsspec/s3fs settings (endpoint, region, profile); it reads bgzip
through Biopython's bgzf, builds a missing `.fai`/`.gzi` itself, and is a pure-Python wheel.
pysam was not chosen: its htslib opens remote files on its own and would not use our fsspec S3
settings or endpoints.

`Reference.prepare()` runs once on the driver (checks the file, builds missing indexes);
`Reference` objects are then pickled to workers, which open the file lazily and never write.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import re
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import fsspec
import pyfaidx

from pipeline.errors import InputError
from pipeline.storage import get_fs, is_local, require_file

log = logging.getLogger(__name__)

# pyfaidx decides "bgzip or plain" from the file name, not the content.
_BGZF_SUFFIXES = (".gz", ".bgz")
# A worker reads a few windows at a time: ranged reads of this size, not s3fs's default 50 MiB
# read-ahead for every new position.
_REMOTE_BLOCK = 1 << 20
_OTHER_COMPRESSIONS = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}
_DUPLICATE = re.compile(r'Duplicate key "(.*)"')


def _how_to_index(uri: str) -> str:
    return (
        f"build it on a writable copy with `samtools faidx {uri}` or "
        f"`python -c \"import pyfaidx; pyfaidx.Faidx('{uri}')\"`, then put the .fai "
        "(and for bgzip the .gzi) beside the reference"
    )


def _sibling(uri: str, fs: fsspec.AbstractFileSystem, path: str, suffix: str) -> str:
    """The name of an index file beside the reference, as the user would write it."""
    # A chained URL (zip://ref.fa::s3://b/x.zip) cannot just take the suffix at its end.
    return fs.unstrip_protocol(path + suffix) if "::" in uri else uri + suffix


def _is_bgzf(head: bytes) -> bool:
    """BGZF: a gzip member whose FEXTRA field starts with the 'BC' subfield (as htslib checks)."""
    return (
        len(head) >= 14 and head[:2] == b"\x1f\x8b" and bool(head[3] & 4) and head[12:14] == b"BC"
    )


def check_compression(uri: str, path: str, head: bytes) -> bool:
    """True for bgzip, False for plain text; InputError for anything pyfaidx cannot seek in."""
    named_bgzf = path.lower().endswith(_BGZF_SUFFIXES)
    if _is_bgzf(head):
        if not named_bgzf:
            raise InputError(
                f"reference {uri} is bgzip-compressed but its name does not end in .gz or .bgz "
                "(the reader decides by name): rename it, e.g. to ref.fa.gz"
            )
        return True
    if head[:2] == b"\x1f\x8b":
        raise InputError(
            f"reference {uri} is plain gzip, which allows no random access: recompress it with "
            f"bgzip, e.g. `gunzip -c ref.fa.gz | bgzip > ref.fa.bgz`"
        )
    for magic, name in _OTHER_COMPRESSIONS.items():
        if head.startswith(magic):
            raise InputError(
                f"reference {uri} is {name}-compressed: decompress it, and use it plain or "
                "recompressed with bgzip (e.g. `bgzip ref.fa`)"
            )
    if named_bgzf:
        raise InputError(
            f"reference {uri} is named like a gzip file but is not compressed: "
            "rename it without the suffix, or compress it with bgzip"
        )
    return False


class _BlockOpenFile(fsspec.core.OpenFile):
    """An OpenFile whose file reads `block_size` bytes at a time (OpenFile passes no open
    arguments to the filesystem)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, block_size: int):
        super().__init__(fs, path, mode="rb")
        self.block_size = block_size

    def __enter__(self):
        f = self.fs.open(self.path, mode="rb", block_size=self.block_size)
        self.fobjects = [f]
        return f


def _open_faidx(
    uri: str,
    fs: fsspec.AbstractFileSystem,
    path: str,
    *,
    build: bool,
    block_size: int | None = None,
) -> pyfaidx.Faidx:
    """pyfaidx on an fsspec file; `build`: may write (build or rebuild) the indexes."""
    if path.lower().endswith(_BGZF_SUFFIXES) and pyfaidx.getmtime_fsspec(path, fs) is None:
        # pyfaidx compares the .gzi's modification time with the FASTA's, and fails with a
        # TypeError where the filesystem reports none (http, zip...).
        raise InputError(
            f"reference {uri}: a bgzip reference cannot be read from {type(fs).__name__}, "
            "which reports no modification times; use an uncompressed copy, or a local, s3:// "
            "or gs:// one"
        )
    if block_size is None:
        fasta = fsspec.core.OpenFile(fs, path, mode="rb")
    else:
        fasta = _BlockOpenFile(fs, path, block_size)
    return pyfaidx.Faidx(
        fasta,
        # pyfaidx takes only the path and filesystem of these; it opens them itself.
        indexname=fsspec.core.OpenFile(fs, path + ".fai", mode="rb"),
        gzi_indexname=fsspec.core.OpenFile(fs, path + ".gzi", mode="rb"),
        as_raw=True,
        sequence_always_upper=True,
        read_long_names=False,  # contig name = first word of the header, as samtools does
        strict_bounds=True,
        duplicate_action="stop",
        build_index=build,
        rebuild=build,
    )


@contextlib.contextmanager
def reference_errors(uri: str) -> Iterator[None]:
    """pyfaidx's and Biopython's complaints about the file as InputErrors naming it."""
    try:
        yield
    except InputError:
        raise
    except pyfaidx.FastaIndexingError as e:
        raise InputError(f"reference {uri} is not a valid FASTA for indexing: {e}") from e
    except ValueError as e:
        dup = _DUPLICATE.search(str(e))
        if dup:
            raise InputError(
                f"reference {uri}: contig {dup.group(1)!r} appears more than once "
                "(a contig's name is the first word of its '>' header)"
            ) from e
        raise InputError(f"cannot read reference {uri}: {e}") from e
    except (pyfaidx.IndexNotFoundError, pyfaidx.UnsupportedCompressionFormat) as e:
        raise InputError(f"cannot read reference {uri}: {e}") from e


class Reference:
    """Random access to an indexed FASTA: plain or bgzip, local or any fsspec URI."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self.storage_options = storage_options
        self._fa: pyfaidx.Faidx | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # An open file does not travel: the unpickled copy opens its own.
        return {"uri": self.uri, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["storage_options"])

    def __repr__(self) -> str:
        return f"Reference({self.uri!r})"

    @classmethod
    def prepare(cls, uri: str, storage_options: dict | None = None) -> dict[str, int]:
        """Check the reference and build its missing indexes (driver, once); its lengths."""
        fs, path = require_file(uri, storage_options, "reference")
        head = fs.cat_file(path, start=0, end=18)  # one ranged read, not a read-ahead block
        bgzf = check_compression(uri, path, head)
        suffixes = [".fai", ".gzi"] if bgzf else [".fai"]
        missing = [_sibling(uri, fs, path, sfx) for sfx in suffixes if not fs.exists(path + sfx)]
        with reference_errors(uri):
            try:
                fa = _open_faidx(uri, fs, path, build=True)
            except (pyfaidx.FastaNotFoundError, pyfaidx.UnsupportedCompressionFormat):
                raise
            except (OSError, NotImplementedError) as e:
                # pyfaidx could not write an index: the location is read-only (a filesystem
                # that cannot write at all, such as http, raises NotImplementedError). pyfaidx's
                # own message advises pyfaidx options; the error beneath says what was refused.
                cause = e.__cause__ or e.__context__ or e
                if isinstance(cause, ConnectionError | TimeoutError):
                    raise  # the network, not the location: worth a retry, not an input error
                if missing:
                    raise InputError(
                        f"reference index {' and '.join(missing)} not found, and it cannot be "
                        f"built there ({type(cause).__name__}: {cause}): {_how_to_index(uri)}"
                    ) from e
                # The indexes exist but look older than the FASTA (a copy or an upload
                # reorders times) and cannot be rewritten here: use them as they are.
                log.warning("%s: its index looks stale and cannot be rebuilt; using it", uri)
                fa = _quietly_open(uri, fs, path)
            else:
                if missing:
                    log.info("built reference index %s", " and ".join(missing))
        try:
            return {name: rec.rlen for name, rec in fa.index.items()}
        finally:
            fa.close()

    def _faidx(self) -> pyfaidx.Faidx:
        """The open index, opened on first use (in the worker), read-only."""
        with self._lock:
            if self._fa is None:
                fs, path = get_fs(self.uri, self.storage_options)
                # pyfaidx would build a missing .gzi even with build_index=False; workers
                # must not write, so a missing index is an error here (prepare() builds it).
                suffixes = [".fai", ".gzi"] if path.lower().endswith(_BGZF_SUFFIXES) else [".fai"]
                for sfx in suffixes:
                    if not fs.exists(path + sfx):
                        raise InputError(
                            f"reference index {_sibling(self.uri, fs, path, sfx)} not found: "
                            f"{_how_to_index(self.uri)}"
                        )
                block = None if is_local(fs) else _REMOTE_BLOCK
                with reference_errors(self.uri):
                    self._fa = _quietly_open(self.uri, fs, path, block)
            return self._fa

    def lengths(self) -> dict[str, int]:
        """contig -> length, in file order."""
        return {name: rec.rlen for name, rec in self._faidx().index.items()}

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases [start, end) of `contig` (0-based, half-open), upper-cased."""
        fa = self._faidx()
        rec = fa.index.get(contig)
        if rec is None:
            raise InputError(f"contig {contig!r} is not in reference {self.uri}")
        start, end = operator.index(start), operator.index(end)
        if not 0 <= start <= end <= rec.rlen:
            raise ValueError(
                f"{contig}:{start}-{end} is outside contig {contig} (length {rec.rlen}) "
                f"of reference {self.uri}"
            )
        if start == end:
            return ""
        try:
            seq = fa.fetch(contig, start + 1, end)  # pyfaidx: 1-based, closed
        except ValueError as e:
            # pyfaidx cannot seek to the end of a full 64 KiB BGZF block (Biopython's writer
            # makes such blocks; htslib's are 65,280 bytes): a base earlier lies inside it.
            if "within_block_offset" not in str(e) or start == 0:
                raise
            seq = fa.fetch(contig, start, end)[1:]
        if len(seq) != end - start:
            raise InputError(
                f"reference {self.uri}: read {len(seq)} bases of {contig}:{start}-{end}, "
                f"expected {end - start}; has the file changed since its .fai was built?"
            )
        return seq

    def close(self) -> None:
        with self._lock:
            if self._fa is not None:
                self._fa.close()
                self._fa = None


def _quietly_open(
    uri: str, fs: fsspec.AbstractFileSystem, path: str, block_size: int | None = None
) -> pyfaidx.Faidx:
    """Open without writing. prepare() has already said what there is to say about staleness;
    pyfaidx would warn again in every worker."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*older than")
        warnings.filterwarnings("ignore", message="for fsspec: .* assuming index is current")
        return _open_faidx(uri, fs, path, build=False, block_size=block_size)
