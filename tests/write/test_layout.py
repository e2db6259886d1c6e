"""output.mode=overwrite deletes a previous run's own files and nothing else (local and S3)."""

from __future__ import annotations

import pytest

from pipeline.errors import OutputError
from pipeline.write.layout import CONFIG, MANIFEST, RUN, OutputDir
from pipeline.write.manifest import claim_output

FIELDS = {"window": {"size": 10}}
SHARD = "part-0123456789abcdef01234567.parquet"


def a_run(out: OutputDir, complete: bool = True) -> None:
    """The files a run leaves: run record, config, a shard and its commit, a write cut short,
    and (complete) the manifest."""
    out.write_json({"format": "dnaembed/1", "fingerprint": "old"}, RUN)
    out.write_bytes(b"model: tiny\n", CONFIG)
    out.write_bytes(b"PAR1", "shards", SHARD)
    out.write_json({"shard": SHARD}, "commits", f"{SHARD}.json")
    out.write_bytes(b"half", "shards", ".tmp-1a2b-part-x.parquet")
    if complete:
        out.write_json({"fingerprint": "old", "shards": []}, MANIFEST)


def listing(out: OutputDir) -> list[str]:
    out.fs.invalidate_cache()
    return sorted(p[len(out.path.rstrip("/")) + 1 :] for p in out.fs.find(out.path))


@pytest.fixture(params=["local", "s3"])
def base(request, tmp_path):
    if request.param == "local":
        return str(tmp_path), None
    s3 = request.getfixturevalue("s3")
    endpoint = request.getfixturevalue("s3_endpoint")
    return f"s3://out-{s3.name}", {"s3": {"endpoint_url": endpoint}}


def test_overwrite_removes_a_previous_run(base):
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out)
    OutputDir(root, options).write_bytes(b"x", "beside.txt")  # beside the output, not in it
    assert claim_output(out, "new", FIELDS, "overwrite") is None
    assert listing(out) == [RUN]
    assert out.read_json(RUN)["fingerprint"] == "new"
    assert OutputDir(root, options).exists("beside.txt")


def test_overwrite_of_an_incomplete_run(base):
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out, complete=False)
    claim_output(out, "new", FIELDS, "overwrite")
    assert listing(out) == [RUN]


@pytest.mark.parametrize(
    "foreign",
    [("thesis", "chapter1.tex"), ("notes.txt",), ("shards", "mine.csv"), ("commits", "x", "y")],
)
def test_overwrite_refuses_anything_not_ours_and_deletes_nothing(base, foreign):
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out)
    out.write_bytes(b"keep me", *foreign)
    before = listing(out)
    shown = foreign[0] + "/" if len(foreign) > 1 and foreign[0] not in ("shards", "commits") else ""
    shown = shown or "/".join(foreign[:2]) + ("/" if len(foreign) > 2 else "")
    with pytest.raises(OutputError, match="did not write") as e:
        claim_output(out, "new", FIELDS, "overwrite")
    assert shown in str(e.value) and "nothing was deleted" in str(e.value)
    assert listing(out) == before


def test_overwrite_refuses_a_directory_of_someone_elses_files(base):
    """`output=~` with overwrite: a home directory is not a run."""
    root, options = base
    home = OutputDir(f"{root}/home", options)
    home.write_bytes(b"\\chapter{One}", "thesis", "chapter1.tex")
    home.write_bytes(b"x: 1", CONFIG)  # a name we also use, but no run record
    with pytest.raises(OutputError, match=r"thesis/"):
        claim_output(home, "new", FIELDS, "overwrite")
    assert home.exists("thesis", "chapter1.tex") and home.exists(CONFIG)
    only_ours = OutputDir(f"{root}/only-config", options)
    only_ours.write_bytes(b"x: 1", CONFIG)
    with pytest.raises(OutputError, match=f"no {RUN} or {MANIFEST}"):
        claim_output(only_ours, "new", FIELDS, "overwrite")
    assert only_ours.exists(CONFIG)


def test_overwrite_of_a_file_or_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        claim_output(OutputDir(str(tmp_path / "f")), "new", FIELDS, "overwrite")
    assert claim_output(OutputDir(str(tmp_path / "new")), "new", FIELDS, "overwrite") is None


def test_overwrite_while_holding_the_lease_of_a_new_output(tmp_path):
    """The driver takes the lease (a file in the output) before it claims the output."""
    from pipeline.write.lease import Lease

    out = OutputDir(str(tmp_path / "fresh"))
    with Lease(out, "new"):
        assert claim_output(out, "new", FIELDS, "overwrite") is None
        a_run(out)
        assert claim_output(out, "newer", FIELDS, "overwrite") is None
        assert listing(out) == ["lease.json", RUN]
