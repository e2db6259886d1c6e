"""Pack budgets from the input's size: every engine gets work, large inputs keep large packs."""

from __future__ import annotations

import gzip
import shutil

import pyarrow as pa

from pipeline.compose import compose, to_config
from pipeline.read.sources import expand_inputs
from pipeline.tokenize.budget import PACKS_PER_ENGINE, estimated_tokens, pack_budget
from pipeline.tokenize.pack import pack
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from pipeline.window.stage import WindowStage


def budget_for(path, *overrides, window_tokens=1024):
    cfg = to_config(compose([f"input.path={path}", "output=o", "model=tiny", *overrides]))
    sources = expand_inputs(cfg.input.path)
    return cfg, sources, pack_budget(cfg, sources, window_tokens)


def test_a_small_genome_gives_every_engine_several_packs(genome_fasta, tiny_model):
    """The 30 kb SARS-CoV-2 genome on two engines: at least two packs per engine once the
    windows are packed, where the fixed budget made one pack."""
    cfg, sources, budget = budget_for(
        genome_fasta, "embed.num_actors=2", "window.size=1024", window_tokens=1024
    )
    assert estimated_tokens(cfg, sources) == genome_fasta.stat().st_size
    assert budget < cfg.embed.max_batch_tokens
    record = "".join(genome_fasta.read_text().splitlines()[1:])
    assert len(record) == 29903
    table = pa.table(
        {
            "source": ["g"],
            "seq_id": ["NC_045512.2"],
            "record_index": [0],
            "sequence": pa.array([record], pa.large_string()),
        }
    )
    windows = pa.concat_tables(WindowStage(cfg.window, "k")(table))
    ids = DnaTokenizer(TokenizerSpec(tiny_model)).encode(windows.column("sequence"))
    windows = windows.append_column("n_tokens", pa.compute.list_value_length(ids))
    packs = pack(windows.drop_columns(["sequence"]), budget)
    assert packs.num_rows >= 2 * 2
    assert max(packs.column("pack_tokens").to_pylist()) <= budget


def test_large_inputs_keep_large_packs(tmp_path, genome_fasta):
    # A file whose estimate is more than engines x PACKS_PER_ENGINE full packs: the budget.
    big = tmp_path / "big.fa"
    with open(big, "wb") as f:
        f.truncate(PACKS_PER_ENGINE * 2 * (1 << 20) + 1)
    cfg, _, budget = budget_for(big, "embed.num_actors=2")
    assert budget == cfg.embed.max_batch_tokens == 1 << 20
    # An autoscaling pool is sized for its largest size; one engine has nothing to spread.
    _, _, b2 = budget_for(genome_fasta, "embed.num_actors=2")
    _, _, b4 = budget_for(genome_fasta, "embed.num_actors=[1,4]")
    assert b4 * 1.9 < b2
    cfg, _, b1 = budget_for(genome_fasta, "embed.num_actors=1")
    assert b1 == cfg.embed.max_batch_tokens


def test_compressed_and_both_strands(tmp_path, genome_fasta):
    gz = tmp_path / "g.fa.gz"
    with open(genome_fasta, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    cfg, sources, _ = budget_for(gz)
    # gzip stores DNA at ~4 bases a byte; the estimate stays at or under the truth.
    est = estimated_tokens(cfg, sources)
    assert 0.5 * 29903 < est <= 1.0 * genome_fasta.stat().st_size
    cfg2, sources2, _ = budget_for(genome_fasta, "window.reverse_complement=merge")
    assert estimated_tokens(cfg2, sources2) == 2 * genome_fasta.stat().st_size


def test_never_less_than_one_window(genome_fasta):
    _, _, budget = budget_for(genome_fasta, "embed.num_actors=64", window_tokens=8192)
    assert budget == 8192


def test_per_token_packs_are_bounded(genome_fasta):
    _, _, budget = budget_for(
        genome_fasta,
        "embed.num_actors=2",
        "embed.per_token=true",
        "embed.max_batch_tokens=4000",
        "embed.per_token_max_tokens=3000",
    )
    assert budget == 3000


def test_regions_and_variants_are_counted(tmp_path):
    bed = tmp_path / "peaks.bed"
    bed.write_text("track name=x\n#c\nchrA\t0\t100\nchrA\t200\t250\n\nchrB\t5\t6\n")
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\nchrA\t5\t.\tA\tC\nchrA\t9\t.\tG\tT\n")
    common = ["input.reference=ref.fa", "output=o", "model=tiny"]
    cfg = to_config(compose([*common, f"input.regions={bed}", "window.flank=10"]))
    assert estimated_tokens(cfg, expand_inputs(str(bed))) == 151 + 3 * 20
    cfg = to_config(compose([*common, f"input.variants={vcf}", "window.size=64"]))
    assert estimated_tokens(cfg, expand_inputs(str(vcf))) == 2 * 2 * 64
