"""What a new user trips on, through the real CLI: input errors found before Ray or an engine
starts (asserted by what the run's log shows), runs that write no rows, output directories
holding someone else's files, and a failed run that must not block the corrected one."""

from __future__ import annotations

import gzip
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.load.__main__ import summarize
from pipeline.load.loader import load_embeddings, read_manifest
from tests.conftest import DEMO_GENOME

VCF_HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=chrA>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
RAY_STARTED = "Started a local Ray instance"


def ray_used(stdout: str, log: str) -> bool:
    """Whether the run got as far as Ray: it started one, or placed engines on one (a test
    process may have started Ray already)."""
    return RAY_STARTED in log or "dnaembed: cluster " in stdout


def cli(capsys, tmp_path, *args: str) -> tuple[int, str, str, str]:
    """(exit code, stdout, stderr, the run's log file) of `dnaembed model=tiny ARGS`."""
    log = tmp_path / "run.log"
    code = main(["model=tiny", f"log.file={log}", *args])
    out, err = capsys.readouterr()
    return code, out, err, log.read_text() if log.exists() else ""


def error_line(err: str) -> str:
    (line,) = [x for x in err.splitlines() if x.startswith("dnaembed: error:")]
    return line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty (no FASTA/FASTQ records)"),
        ("\n\n  \n", "the file is empty (no FASTA/FASTQ records)"),
        ("hello\n", "not FASTA or FASTQ (first byte b'h'"),
        (">x\n", "nothing to embed: none of the input's 1 records has at least"),
        (">x\nACGT\n>x\nACGT\n", "duplicate sequence id 'x'"),
        (">x\nACGJT\n", "record 'x' has 'J' at position 3"),
    ],
)
def test_a_bad_fasta_is_refused_before_ray_starts(capsys, tmp_path, text, message):
    fa = tmp_path / "in.fa"
    fa.write_text(text)
    out = tmp_path / "out"
    code, stdout, err, log = cli(capsys, tmp_path, f"input={fa}", f"output={out}")
    assert code == 2 and message in error_line(err), err
    assert "resolved config" in log and not ray_used(stdout, log)
    assert not out.exists()


def test_one_bad_file_among_good_ones_is_named(capsys, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(DEMO_GENOME, tmp_path / "in" / "genome.fa")
    with gzip.open(tmp_path / "in" / "empty.fa.gz", "wt"):
        pass
    code, stdout, err, log = cli(capsys, tmp_path, f"input={tmp_path / 'in'}", "output=o")
    assert code == 2 and "empty.fa.gz: the file is empty" in error_line(err)
    assert not ray_used(stdout, log)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("chrA\t100\trs1\t{wrong}\tG", "record 1 rs1 (chrA:100 {wrong}>G): REF {wrong} does not"),
        ("chrQ\t10\trs2\tA\tG", "contig 'chrQ' is not in the reference"),
        ("chrA\t99999\trs3\tA\tG", "runs past the end of chrA"),
    ],
)
def test_a_vcf_that_does_not_fit_the_reference_is_refused_before_ray_starts(
    capsys, tmp_path, reference, record, message
):
    path, contigs = reference
    wrong = "A" if contigs["chrA"][99] != "A" else "C"
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(VCF_HEADER + record.format(wrong=wrong) + "\t.\t.\t.\n")
    code, stdout, err, log = cli(
        capsys, tmp_path, f"input.reference={path}", f"input.variants={vcf}", "output=o"
    )
    assert code == 2 and message.format(wrong=wrong) in error_line(err), err
    assert "input.on_error=skip skips it" in err
    assert not ray_used(stdout, log)


def test_a_bed_naming_a_contig_the_reference_lacks_is_refused_before_ray_starts(
    capsys, tmp_path, reference
):
    path, _ = reference
    bed = tmp_path / "peaks.bed"
    bed.write_text("chrA\t10\t50\nchr7\t10\t50\n")
    code, stdout, err, log = cli(
        capsys, tmp_path, f"input.reference={path}", f"input.regions={bed}", "output=o"
    )
    assert code == 2, err
    assert "peaks.bed: interval 1 (chr7:10-50, 0-based): contig 'chr7' is not in" in err
    assert not ray_used(stdout, log)


def test_a_vcf_whose_every_record_is_skipped_is_refused_before_ray_starts(
    capsys, tmp_path, reference
):
    """Skipped records would make a run of no rows: said at once, with why."""
    path, contigs = reference
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(VCF_HEADER + f"chrA\t8000\tsv\t{contigs['chrA'][7999]}\t<DEL>\t.\t.\t.\n")
    code, stdout, err, log = cli(
        capsys,
        tmp_path,
        f"input.reference={path}",
        f"input.variants={vcf}",
        "input.on_error=skip",
        "output=o",
    )
    line = error_line(err)
    assert code == 2 and "nothing to embed: the input holds no variant alleles" in line
    assert "1 skipped: symbolic allele <DEL>" in line
    assert not ray_used(stdout, log)


@pytest.mark.slow
def test_a_run_that_embeds_nothing_exits_non_zero_and_its_output_loads_with_its_columns(
    ray_session, capsys, tmp_path
):
    """Every window is all N and window.n_policy=skip drops it: nothing the driver can see
    before the run. The run says why, exits 2; its output has one shard of no rows that
    carries the schema."""
    fa = tmp_path / "gaps.fa"
    fa.write_text(">gap1\n" + "N" * 300 + "\n>gap2\n" + "N" * 50 + "\n")
    out = tmp_path / "out"
    args = [f"input={fa}", f"output={out}", "window.size=100", "window.n_policy=skip"]
    code, stdout, err, _ = cli(capsys, tmp_path, *args)
    line = error_line(err)
    assert code == 2, err
    assert (
        f"no rows were written to {out}: all 2 records were skipped; 4 windows had more N" in line
    )
    assert "2 records (2 skipped), 0 windows" in stdout
    table = load_embeddings(str(out))
    assert table.num_rows == 0
    assert table.schema.field("embedding").type.list_size == 256
    assert table.column_names[:7] == [
        "chunk_id",
        "source",
        "seq_id",
        "start",
        "end",
        "strand",
        "n_tokens",
    ]
    assert read_manifest(str(out))["dim"] == 256
    assert "dim 256, 1 shards" in summarize(str(out))
    assert pq.read_table(out).num_rows == 0  # any Parquet reader: the columns, no rows
    # The same command again: complete, and still says it wrote nothing.
    code, stdout, err, _ = cli(capsys, tmp_path, *args)
    assert code == 2 and "already complete" in stdout and "no rows were written" in err


@pytest.mark.slow
def test_skipped_records_warn_with_their_count_and_first_reasons(ray_session, capsys, tmp_path):
    fa = tmp_path / "mixed.fa"
    fa.write_text(">ok\n" + "ACGT" * 40 + "\n>bad1\nACGJ\n>bad2\nAXGT\n>ok\nACGT\n")
    code, stdout, err, _ = cli(
        capsys, tmp_path, f"input={fa}", f"output={tmp_path / 'out'}", "input.on_error=skip"
    )
    assert code == 0, err
    (warning,) = [x for x in stdout.splitlines() if "records skipped" in x]
    assert warning.startswith("dnaembed: warning: 3 of 4 records skipped (bad1 in ")
    assert "'J' at position 3" in warning and "duplicate sequence id 'ok'" in warning
    assert "the manifest lists each (skipped_records)" in warning


def test_an_output_holding_someone_elses_files_is_refused_in_every_mode(capsys, tmp_path):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "thesis.tex").write_text("\\chapter{One}")
    (home / "data" / "x.csv").write_text("a,b\n")
    for mode in ("error", "overwrite"):
        code, stdout, err, log = cli(
            capsys, tmp_path, f"input={DEMO_GENOME}", f"output={home}", f"output.mode={mode}"
        )
        line = error_line(err)
        assert code == 2 and "holds files a dnaembed run did not write (data/, thesis.tex)" in line
        assert "choose another output" in line and not ray_used(stdout, log)
        assert sorted(p.name for p in home.rglob("*")) == ["data", "thesis.tex", "x.csv"]


@pytest.mark.slow
def test_a_run_that_committed_nothing_does_not_block_the_corrected_one(
    ray_session, capsys, tmp_path, reference, monkeypatch
):
    """A VCF error found by the window stage (past the driver's first records) fails the
    run before any shard; the corrected VCF, another config, then runs into the same
    output without output.mode=overwrite."""
    from pipeline import precheck

    path, contigs = reference
    a = contigs["chrA"]
    wrong = "A" if a[4999] != "A" else "C"
    vcf = tmp_path / "calls.vcf"
    alt = "A" if a[2999] != "A" else "C"
    good = f"chrA\t3000\trs0\t{a[2999]}\t{alt}\t.\t.\t.\n"
    vcf.write_text(VCF_HEADER + good + f"chrA\t5000\trs1\t{wrong}\tG\t.\t.\t.\n")
    out = tmp_path / "out"
    args = [f"input.reference={path}", f"input.variants={vcf}", f"output={out}", "window.size=200"]
    with monkeypatch.context() as m:
        m.setattr(precheck, "LOCI_CHECKED", 1)  # as a VCF too large to check on the driver
        code, stdout, err, log = cli(capsys, tmp_path, *args)
    assert code == 2 and "REF " + wrong + " does not match" in error_line(err)
    assert ray_used(stdout, log)  # found by the run itself
    assert (out / "_run.json").exists() and not (out / "_commits").exists()
    fixed = tmp_path / "calls.fixed.vcf"
    fixed.write_text(VCF_HEADER + good)
    args[1] = f"input.variants={fixed}"
    code, stdout, err, _ = cli(capsys, tmp_path, *args)
    assert code == 0, err
    assert "1 records (0 skipped), 1 windows" in stdout
