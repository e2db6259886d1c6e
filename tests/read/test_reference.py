from __future__ import annotations

import gzip
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path

import pysam
import pytest

from pipeline.errors import InputError
from pipeline.read.reference import Reference
from pipeline.storage import s3_options
from tests.reference_fixtures import cut_contigs, read_genome, write_fasta


@pytest.fixture(scope="module")
def contigs(genome_fasta) -> dict[str, str]:
    return cut_contigs(genome_fasta)


@pytest.fixture
def plain(tmp_path, contigs) -> Path:
    return write_fasta(tmp_path / "ref.fa", contigs)


@pytest.fixture
def bgzip(tmp_path, plain) -> Path:
    dst = tmp_path / "ref.fa.gz"
    pysam.tabix_compress(str(plain), str(dst), force=True)
    return dst


def spots(length: int, rng: random.Random, n: int = 150) -> list[tuple[int, int]]:
    """Random (start, end) plus the edges: contig ends, line boundaries, single bases."""
    fixed = [(0, 1), (0, length), (length - 1, length), (length, length), (0, 0)]
    fixed += [(59, 61), (60, 120), (69, 71), (max(0, length - 71), length)]
    fixed = [(s, e) for s, e in fixed if 0 <= s <= e <= length]
    rand = []
    for _ in range(n):
        s = rng.randrange(length)
        rand.append((s, rng.randint(s, min(length, s + rng.choice([1, 10, 200, 5000])))))
    return fixed + rand


def check_all(ref: Reference, contigs: dict[str, str]) -> None:
    rng = random.Random(7)
    for name, seq in contigs.items():
        for s, e in spots(len(seq), rng):
            assert ref.fetch(name, s, e) == seq[s:e].upper(), (name, s, e)


@pytest.mark.parametrize("kind", ["plain", "bgzip"])
def test_prepare_builds_indexes_and_fetch_matches_slicing(kind, request, contigs):
    path = request.getfixturevalue(kind)
    uri = str(path)
    indexes = [Path(uri + ".fai")] + ([Path(uri + ".gzi")] if kind == "bgzip" else [])
    assert not any(p.exists() for p in indexes)

    lengths = Reference.prepare(uri)

    assert all(p.exists() for p in indexes)
    expected = {name: len(seq) for name, seq in contigs.items()}
    assert lengths == expected
    assert list(lengths) == ["chrA", "chrB", "chrC"]  # file order
    ref = Reference(uri)
    assert ref.lengths() == expected
    check_all(ref, contigs)
    ref.close()


@pytest.mark.parametrize("kind", ["plain", "bgzip"])
def test_indexes_equal_samtools_and_agree_with_pysam(kind, request, tmp_path, contigs):
    path = request.getfixturevalue(kind)
    Reference.prepare(str(path))
    other = tmp_path / "samtools" / path.name
    other.parent.mkdir()
    shutil.copy(path, other)
    pysam.faidx(str(other))  # samtools' own index, an independent implementation
    suffixes = [".fai"] + ([".gzi"] if kind == "bgzip" else [])
    for suffix in suffixes:
        ours = Path(str(path) + suffix).read_bytes()
        assert ours == Path(str(other) + suffix).read_bytes(), suffix

    ref = Reference(str(path))
    with pysam.FastaFile(str(other)) as fa:
        rng = random.Random(3)
        for name, seq in contigs.items():
            for s, e in spots(len(seq), rng, n=30):
                assert ref.fetch(name, s, e) == fa.fetch(name, s, e).upper()


def test_soft_masked_bases_come_back_upper_case(plain, contigs):
    assert any(c.islower() for c in plain.read_text())
    Reference.prepare(str(plain))
    got = Reference(str(plain)).fetch("chrB", 100, 2000)
    assert got == contigs["chrB"][100:2000].upper()
    assert got.isupper()


def test_prepare_keeps_existing_index(plain):
    Reference.prepare(str(plain))
    fai = Path(str(plain) + ".fai")
    before = fai.stat().st_mtime_ns
    Reference.prepare(str(plain))
    assert fai.stat().st_mtime_ns == before


def test_plain_gzip_is_refused_with_bgzip_advice(tmp_path, plain):
    gz = tmp_path / "plain.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(InputError, match=r"plain gzip.*bgzip"):
        Reference.prepare(str(gz))


@pytest.mark.parametrize(
    ("name", "data", "match"),
    [
        ("ref.fa.bz2", b"BZh91AY&SY", "bzip2"),
        ("ref.fa.xz", b"\xfd7zXZ\x00\x00", "xz"),
        ("ref.fa.zst", b"\x28\xb5\x2f\xfd\x00", "zstd"),
        ("ref.fa.gz", b">chrA\nACGT\n", "not compressed"),
    ],
)
def test_other_compressions_are_refused(tmp_path, name, data, match):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=match):
        Reference.prepare(str(path))


def test_bgzip_without_gz_name_is_refused(tmp_path, bgzip):
    odd = tmp_path / "ref.fasta"
    shutil.copy(bgzip, odd)
    with pytest.raises(InputError, match=r"bgzip-compressed.*\.gz or \.bgz"):
        Reference.prepare(str(odd))


def test_missing_reference(tmp_path):
    with pytest.raises(InputError, match="reference not found: .*nope.fa"):
        Reference.prepare(str(tmp_path / "nope.fa"))


def _read_only(directory: Path):
    directory.chmod(0o555)
    if os.access(directory, os.W_OK):  # root ignores permissions
        directory.chmod(0o755)
        pytest.skip("running as root: a read-only directory is still writable")


@pytest.mark.parametrize("kind", ["plain", "bgzip"])
def test_missing_index_in_read_only_directory(kind, request):
    path = request.getfixturevalue(kind)
    _read_only(path.parent)
    try:
        with pytest.raises(InputError, match=re.escape(f"{path}.fai") + r".*samtools faidx"):
            Reference.prepare(str(path))
    finally:
        path.parent.chmod(0o755)


def test_read_only_directory_with_index_works_even_if_stale(plain, contigs):
    Reference.prepare(str(plain))
    fai = Path(str(plain) + ".fai")
    # The FASTA looks newer than its index (as after a copy), and nothing can be rewritten.
    os.utime(fai, (1_000_000, 1_000_000))
    fai.chmod(0o444)
    _read_only(plain.parent)
    try:
        assert Reference.prepare(str(plain)) == {k: len(v) for k, v in contigs.items()}
        assert Reference(str(plain)).fetch("chrA", 10, 20) == contigs["chrA"][10:20]
    finally:
        plain.parent.chmod(0o755)


def test_worker_never_builds_a_missing_index(bgzip):
    with pytest.raises(InputError, match=re.escape(f"{bgzip}.fai")):
        Reference(str(bgzip)).fetch("chrA", 0, 10)
    assert not Path(str(bgzip) + ".gzi").exists()


def test_unknown_contig_and_bad_coordinates(plain):
    Reference.prepare(str(plain))
    ref = Reference(str(plain))
    with pytest.raises(InputError, match=r"'chrZ'.*" + re.escape(str(plain))):
        ref.fetch("chrZ", 0, 10)
    # A contig's name is the first word of its header.
    with pytest.raises(InputError, match="chrA cut"):
        ref.fetch("chrA cut from NC_045512.2", 0, 10)
    for start, end in [(-1, 5), (5, 4), (0, 12001), (12001, 12002)]:
        with pytest.raises(ValueError, match="outside contig chrA") as info:
            ref.fetch("chrA", start, end)
        assert not isinstance(info.value, InputError)  # the caller's bug, not the input's


def test_duplicate_contig_names(tmp_path, contigs):
    path = tmp_path / "dup.fa"
    path.write_text(">chrA\nACGT\n>chrB\nGGCC\n>chrA second copy\nTTTT\n")
    with pytest.raises(InputError, match="contig 'chrA' appears more than once"):
        Reference.prepare(str(path))


def test_malformed_fasta(tmp_path):
    path = tmp_path / "bad.fa"
    path.write_text(">chrA\nACGTACGT\nACG\nACGTACGT\n")  # a short line in the middle
    with pytest.raises(InputError, match=r"bad\.fa.*(?i:inconsistent)"):
        Reference.prepare(str(path))


def test_pickles_before_and_after_use(bgzip, contigs):
    Reference.prepare(str(bgzip))
    ref = Reference(str(bgzip))
    fresh = pickle.loads(pickle.dumps(ref))
    assert fresh.fetch("chrB", 17000, 17903) == contigs["chrB"][17000:].upper()
    used = pickle.loads(pickle.dumps(fresh))  # an open file does not travel
    assert used.fetch("chrA", 0, 50) == contigs["chrA"][:50]
    assert used.uri == str(bgzip)


def test_s3_reference_with_uploaded_indexes(s3, s3_endpoint, bgzip, contigs):
    Reference.prepare(str(bgzip))
    base = f"in-{s3.name}/genome/ref.fa.gz"
    for suffix in ("", ".fai", ".gzi"):
        s3.put(str(bgzip) + suffix, base + suffix)
    opts = {"s3": s3_options(endpoint_url=s3_endpoint)}
    uri = f"s3://{base}"
    assert Reference.prepare(uri, opts) == {k: len(v) for k, v in contigs.items()}
    ref = pickle.loads(pickle.dumps(Reference(uri, opts)))
    check_all(ref, contigs)
    ref.close()


def test_s3_prepare_builds_missing_indexes(s3, s3_endpoint, bgzip, contigs):
    base = f"in-{s3.name}/ref.fa.gz"
    s3.put(str(bgzip), base)
    opts = {"s3": s3_options(endpoint_url=s3_endpoint)}
    uri = f"s3://{base}"
    with pytest.raises(InputError, match=re.escape(f"{uri}.fai")):
        Reference(uri, opts).lengths()

    Reference.prepare(uri, opts)

    s3.invalidate_cache()
    assert s3.exists(base + ".fai")
    assert s3.exists(base + ".gzi")
    Reference.prepare(str(bgzip))  # the same indexes as built locally
    assert s3.cat_file(base + ".fai") == Path(str(bgzip) + ".fai").read_bytes()
    assert s3.cat_file(base + ".gzi") == Path(str(bgzip) + ".gzi").read_bytes()
    ref = Reference(uri, opts)
    assert ref.fetch("chrB", 50, 2500) == contigs["chrB"][50:2500].upper()


def test_s3_missing_reference(s3, s3_endpoint):
    opts = {"s3": s3_options(endpoint_url=s3_endpoint)}
    with pytest.raises(InputError, match="reference not found"):
        Reference.prepare(f"s3://in-{s3.name}/nope.fa.gz", opts)


def test_read_only_filesystem(tmp_path, plain, bgzip, contigs):
    """A zip archive read through fsspec cannot be written to, whoever runs the test."""
    Reference.prepare(str(plain))
    Reference.prepare(str(bgzip))
    archive = tmp_path / "refs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(plain, "bare/ref.fa")
        for suffix in ("", ".fai"):
            z.write(str(plain) + suffix, "indexed/ref.fa" + suffix)
        for suffix in ("", ".fai", ".gzi"):
            z.write(str(bgzip) + suffix, "indexed/ref.fa.gz" + suffix)

    uri = f"zip://bare/ref.fa::file://{archive}"
    with pytest.raises(
        InputError, match=r"index zip://bare/ref\.fa\.fai not found.*samtools faidx"
    ):
        Reference.prepare(uri)
    # Indexed: read in place (zip reports no times: pyfaidx warns it assumes the index current).
    uri = f"zip://indexed/ref.fa::file://{archive}"
    with pytest.warns(UserWarning, match="assuming index is current"):
        assert Reference.prepare(uri) == {k: len(v) for k, v in contigs.items()}
    check_all(Reference(uri), contigs)
    # bgzip: pyfaidx compares the .gzi's time with the FASTA's, and zip has none: say so.
    uri = f"zip://indexed/ref.fa.gz::file://{archive}"
    with pytest.raises(InputError, match="reports no modification times"):
        Reference.prepare(uri)


def test_bgzip_with_full_64k_blocks_reads_at_every_block_boundary(tmp_path, genome_fasta):
    """Biopython's BGZF writer fills blocks to 65,536 bytes (htslib's stop at 65,280); a
    fetch that starts at a block's end must still read the right bases."""
    from Bio import bgzf

    g = read_genome(genome_fasta)
    contigs = {"chrA": g * 4, "chrB": g[:50000] * 3}
    plain = write_fasta(tmp_path / "ref.fa", contigs)
    dst = tmp_path / "ref.fa.gz"
    data = plain.read_bytes()
    with bgzf.BgzfWriter(str(dst), "wb") as f:
        f.write(data)
    ref = Reference(str(dst))
    Reference.prepare(str(dst))
    # Every base whose byte starts a new 64 KiB block, and its neighbours.
    offsets = {}
    pos = 0
    for line in data.splitlines(keepends=True):
        if line.startswith(b">"):
            name, i = line[1:].split()[0].decode(), 0
        else:
            for k in range(len(line.rstrip())):
                offsets[pos + k] = (name, i + k)
            i += len(line.rstrip())
        pos += len(line)
    starts = [offsets[b] for b in range(1 << 16, len(data), 1 << 16) if b in offsets]
    assert starts
    for name, s in starts:
        for a in (s - 1, s, s + 1):
            assert ref.fetch(name, a, a + 25) == contigs[name][a : a + 25].upper(), (name, a)
    ref.close()
