from __future__ import annotations

import gzip
import re
from pathlib import Path

import pysam
import pytest

from pipeline.errors import InputError
from pipeline.read.bed import Interval, iter_intervals
from pipeline.storage import s3_options

# Header lines, 3-, 4-, 6- and 10-column (narrowPeak) lines, a blank line, a space-separated
# line, a comment in the middle and Windows line endings on one line.
BED = (
    "# peaks on two contigs\n"
    "browser position chrA:1-1000\n"
    'track name=peaks description="test peaks"\n'
    "chrA\t0\t100\n"
    "\n"
    "chrA\t100\t250\tpeak1\n"
    "chrB\t5\t17903\tpeak2\t960\t-\n"
    "# a comment between intervals\n"
    "chrB\t10\t20\t.\t.\t.\r\n"
    "chrA\t1000\t1200\tp3\t12.5\t+\t1050\t8.1\t-1\t75\n"
    "chrA 7 9\n"
)
EXPECTED = [
    Interval(0, 4, "chrA", 0, 100, None, None, "."),
    Interval(1, 6, "chrA", 100, 250, "peak1", None, "."),
    Interval(2, 7, "chrB", 5, 17903, "peak2", 960.0, "-"),
    Interval(3, 9, "chrB", 10, 20, None, None, "."),
    Interval(4, 10, "chrA", 1000, 1200, "p3", 12.5, "+"),
    Interval(5, 11, "chrA", 7, 9, None, None, "."),
]


@pytest.fixture
def bed(tmp_path) -> Path:
    path = tmp_path / "peaks.bed"
    path.write_bytes(BED.encode())
    return path


def test_plain_bed(bed):
    assert list(iter_intervals(str(bed))) == EXPECTED


def test_gzip_and_bgzip_read_the_same(tmp_path, bed):
    gz = tmp_path / "peaks.bed.gz"
    gz.write_bytes(gzip.compress(bed.read_bytes()))
    bgz = tmp_path / "peaks.bed.bgz"
    pysam.tabix_compress(str(bed), str(bgz), force=True)
    nameless = tmp_path / "peaks.bed.data"  # gzip is recognised by content, not name
    nameless.write_bytes(gz.read_bytes())
    for path in (gz, bgz, nameless):
        assert list(iter_intervals(str(path))) == EXPECTED, path


def test_s3_bed(s3, s3_endpoint, bed):
    key = f"in-{s3.name}/peaks.bed"
    s3.put(str(bed), key)
    got = iter_intervals(f"s3://{key}", {"s3": s3_options(endpoint_url=s3_endpoint)})
    assert list(got) == EXPECTED


def test_empty_and_header_only_files(tmp_path):
    path = tmp_path / "empty.bed"
    path.write_text("")
    assert list(iter_intervals(str(path))) == []
    path.write_text("track name=x\n# nothing\n\n")
    assert list(iter_intervals(str(path))) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chrA", r"1 column\(s\)"),
        ("chrA\t10", r"2 column\(s\), BED needs at least 3"),
        ("chrA 10", r"2 column\(s\)"),
        ("chrA\tten\t20", r"start 'ten' is not an integer"),
        ("chrA\t10\t2.5e3", r"end '2.5e3' is not an integer"),
        ("chrA\t1_0\t20", r"start '1_0' is not an integer"),
        ("chrA\t\t20", r"start '' is not an integer"),
        ("chrA\t-5\t20", r"start -5 is negative"),
        ("chrA\t20\t20", r"zero-length interval chrA:20-20.*no bases to embed"),
        ("chrA\t30\t20", r"end 20 is before start 30"),
        ("chrA\t10\t20\tx\t0\t*", r"strand '\*' is not '\+', '-' or '\.'"),
        ("chrA\t10\t20\tx\t0\tplus", r"strand 'plus'"),
        ("chrA\t10\t20\tx\thigh\t+", r"score 'high' is not a number"),
        ("chrA\t10\t20\tx\tnan\t+", r"score 'nan' is not a number"),
        ("\t10\t20", r"empty chrom"),
    ],
)
def test_errors_name_file_line_and_value(tmp_path, line, message):
    path = tmp_path / "bad.bed"
    path.write_text(f"track name=bad\nchrA\t0\t10\n{line}\nchrA\t0\t10\n")
    where = re.escape(f"{path}:3: ")
    with pytest.raises(InputError, match=where + message):
        list(iter_intervals(str(path)))


def test_intervals_before_an_error_come_first(tmp_path):
    path = tmp_path / "bad.bed"
    path.write_text("chrA\t0\t10\nchrA\t5\t1\n")
    it = iter_intervals(str(path))
    assert next(it) == Interval(0, 1, "chrA", 0, 10, None, None, ".")
    with pytest.raises(InputError, match=re.escape(f"{path}:2:")):
        next(it)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="BED file not found: .*nope.bed"):
        list(iter_intervals(str(tmp_path / "nope.bed")))


def test_truncated_gzip(tmp_path, bed):
    data = gzip.compress(bed.read_bytes() * 50)
    path = tmp_path / "cut.bed.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.bed\.gz: truncated or corrupt gzip"):
        list(iter_intervals(str(path)))


def test_binary_file(tmp_path):
    path = tmp_path / "bin.bed"
    path.write_bytes(b"chrA\t0\t10\n\xff\xfe\x00garbage\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:2: not text")):
        list(iter_intervals(str(path)))
