"""One rule for every output.mode: a run writes only into a new or empty directory or one of
its own runs; overwrite deletes a previous run's own files and nothing else (local and S3)."""

from __future__ import annotations

import pytest

from pipeline.errors import OutputError
from pipeline.write.layout import COMMITS, CONFIG, LEASE, MANIFEST, RUN, SHARDS, OutputDir
from pipeline.write.manifest import claim_output

FIELDS = {"window": {"size": 10}}
SHARD = "part-0123456789abcdef01234567.parquet"
OTHER = "part-fedcba9876543210fedcba98.parquet"


def a_run(out: OutputDir, complete: bool = True, commits: bool = True) -> None:
    """The files a run leaves: run record, config, a shard and its commit, a write cut short,
    and (complete) the manifest."""
    out.write_json({"format": "dnaembed/1", "fingerprint": "old"}, RUN)
    out.write_bytes(b"model: tiny\n", CONFIG)
    if commits:
        out.write_bytes(b"PAR1", SHARDS, SHARD)
        out.write_json({"shard": SHARD}, COMMITS, f"{SHARD}.json")
    out.write_bytes(b"half", SHARDS, ".tmp-1a2b-part-x.parquet")
    if complete:
        out.write_json({"fingerprint": "old", "shards": []}, MANIFEST)


def a_legacy_run(out: OutputDir, complete: bool = True) -> None:
    """What an earlier version left: the same files without the leading `_`."""
    out.write_json({"format": "dnaembed/1", "fingerprint": "old"}, "run.json")
    out.write_bytes(b"model: tiny\n", "config.yaml")
    out.write_bytes(b"PAR1", SHARDS, SHARD)
    out.write_json({"shard": SHARD}, "commits", f"{SHARD}.json")
    if complete:
        out.write_json(
            {"fingerprint": "old", "shards": [{"path": f"shards/{SHARD}"}]}, "manifest.json"
        )


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


@pytest.mark.parametrize("mode", ["error", "overwrite"])
@pytest.mark.parametrize(
    "foreign",
    [("thesis", "chapter1.tex"), ("notes.txt",), ("shards", "mine.csv"), ("_commits", "x", "y")],
)
def test_every_mode_refuses_anything_not_ours_and_touches_nothing(base, foreign, mode):
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out)
    out.write_bytes(b"keep me", *foreign)
    before = listing(out)
    shown = foreign[0] + "/" if len(foreign) > 1 and foreign[0] not in (SHARDS, COMMITS) else ""
    shown = shown or "/".join(foreign[:2]) + ("/" if len(foreign) > 2 else "")
    with pytest.raises(OutputError, match="did not write") as e:
        claim_output(out, "new" if mode == "overwrite" else "old", FIELDS, mode)
    assert shown in str(e.value)
    assert "nothing was written or deleted" in str(e.value)
    assert listing(out) == before


@pytest.mark.parametrize("mode", ["error", "overwrite"])
def test_a_directory_of_someone_elses_files_is_never_written_into(base, mode):
    """`output=~`: a home directory is not a run, in any mode."""
    root, options = base
    home = OutputDir(f"{root}/home", options)
    home.write_bytes(b"\\chapter{One}", "thesis", "chapter1.tex")
    home.write_bytes(b"x", "data", "table.csv")
    with pytest.raises(OutputError, match=r"data/, thesis/.*choose another output") as e:
        claim_output(home, "new", FIELDS, mode)
    assert "nothing was" in str(e.value)
    assert listing(home) == ["data/table.csv", "thesis/chapter1.tex"]
    only_ours = OutputDir(f"{root}/only-config", options)
    only_ours.write_bytes(b"x: 1", CONFIG)  # a name we also use, but no run record
    with pytest.raises(OutputError, match=f"no {RUN} or {MANIFEST}"):
        claim_output(only_ours, "new", FIELDS, mode)
    assert listing(only_ours) == [CONFIG]


def test_an_empty_directory_is_taken(base):
    root, options = base
    out = OutputDir(f"{root}/empty", options)
    if out.fs.protocol == "file" or "file" in out.fs.protocol:
        out.fs.makedirs(out.path, exist_ok=True)
    assert claim_output(out, "new", FIELDS, "error") is None
    assert listing(out) == [RUN]


def test_a_run_that_committed_nothing_does_not_block_the_next(base):
    """A run that failed before its first shard (a bad VCF, say) leaves its record and
    config; the corrected command, another config, takes the output without overwrite."""
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out, complete=False, commits=False)
    assert claim_output(out, "new", FIELDS, "error") is None
    assert out.read_json(RUN)["fingerprint"] == "new"
    # One shard committed: that run is kept, and another config is refused.
    kept = OutputDir(f"{root}/kept", options)
    a_run(kept, complete=False)
    with pytest.raises(OutputError, match="different config"):
        claim_output(kept, "new", FIELDS, "error")
    assert kept.read_json(RUN)["fingerprint"] == "old"


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
        assert listing(out) == [LEASE, RUN]


def test_an_output_of_the_earlier_layout_is_renamed_and_kept(base):
    root, options = base
    done = OutputDir(f"{root}/done", options)
    a_legacy_run(done)
    manifest = claim_output(done, "old", FIELDS, "error")
    assert manifest is not None and manifest["fingerprint"] == "old"
    assert listing(done) == [COMMITS + f"/{SHARD}.json", CONFIG, MANIFEST, RUN, f"shards/{SHARD}"]
    half = OutputDir(f"{root}/half", options)
    a_legacy_run(half, complete=False)
    assert claim_output(half, "old", FIELDS, "error") is None  # resumes from its commits
    assert half.exists(COMMITS, f"{SHARD}.json") and not half.exists("commits")
    gone = OutputDir(f"{root}/gone", options)
    a_legacy_run(gone)
    claim_output(gone, "new", FIELDS, "overwrite")
    assert listing(gone) == [RUN]


def test_the_lease_of_an_earlier_version_is_not_taken_over(tmp_path):
    out = OutputDir(str(tmp_path / "run"))
    a_legacy_run(out, complete=False)
    out.write_json({"pid": 1}, "lease.json")
    with pytest.raises(OutputError, match="lease.json of an earlier dnaembed version"):
        claim_output(out, "old", FIELDS, "error")
    assert out.exists("run.json") and out.exists("commits", f"{SHARD}.json")


def test_prune_keeps_exactly_the_listed_shards(base):
    root, options = base
    out = OutputDir(f"{root}/run", options)
    a_run(out, complete=False)
    out.write_bytes(b"PAR1", SHARDS, OTHER)  # lost its commit record, or overlapped
    out.write_json({"shard": OTHER}, COMMITS, f"{OTHER}.json")
    out.write_bytes(b"{", COMMITS, ".tmp-9f-x.json")
    gone = out.prune({SHARD})
    assert len(gone) == 4
    assert listing(out) == [f"{COMMITS}/{SHARD}.json", CONFIG, RUN, f"shards/{SHARD}"]
