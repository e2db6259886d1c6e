from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.tokenize.tokenizer import (
    DnaTokenizer,
    TokenizerSpec,
    UnknownToken,
    check_window_fits,
)


def save_variant(tiny_model: str, out, post: bool = False, kmer: bool = False) -> str:
    """A copy of the tiny tokenizer: with BOS/EOS added, or splitting into 2-mers."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(f"{tiny_model}/tokenizer.json")
    if post:
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
        )
    if kmer:
        vocab = {"[PAD]": 0, "[UNK]": 1}
        for a in "ACGTN":
            vocab[a] = len(vocab)
            for b in "ACGTN":
                vocab[a + b] = len(vocab)
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(".{1,2}"), behavior="isolated")
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    ).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def plain(tiny_model):
    return DnaTokenizer(TokenizerSpec(tiny_model))


def hf_ids(tok: DnaTokenizer, seqs, specials):
    return [list(tok.hf(s, add_special_tokens=specials)["input_ids"]) for s in seqs]


seqs = st.lists(st.text(alphabet="ACGTN", max_size=300), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(seqs)
def test_fast_path_equals_the_tokenizer(plain, batch):
    assert plain.char_level
    got = plain.encode(pa.array(batch, pa.large_string())).to_pylist()
    assert got == hf_ids(plain, batch, False)


def test_fast_path_on_a_sliced_array(plain):
    arr = pa.array(["AAAA", "CCGT", "TTN", "G"], pa.large_string()).slice(1, 2)
    assert plain.encode(arr).to_pylist() == hf_ids(plain, ["CCGT", "TTN"], False)


def test_special_tokens_follow_the_tokenizer(tiny_model, tmp_path):
    path = save_variant(tiny_model, tmp_path / "post", post=True)
    tok = DnaTokenizer(TokenizerSpec(path, add_special_tokens=True))
    assert tok.char_level and tok.prefix == (2,) and tok.suffix == (3,)
    batch = ["ACGT", "", "NNAC"]
    assert tok.encode(pa.array(batch)).to_pylist() == hf_ids(tok, batch, True)
    assert tok.max_tokens(10) == 12
    without = DnaTokenizer(TokenizerSpec(path, add_special_tokens=False))
    assert without.n_special == 0


def test_non_char_tokenizer_uses_the_tokenizer_itself(tiny_model, tmp_path):
    path = save_variant(tiny_model, tmp_path / "kmer", kmer=True)
    tok = DnaTokenizer(TokenizerSpec(path))
    assert not tok.char_level
    batch = ["ACGTA", "NN"]
    assert tok.encode(pa.array(batch)).to_pylist() == hf_ids(tok, batch, False)
    assert [len(x) for x in tok.encode(pa.array(batch)).to_pylist()] == [3, 1]


def test_unknown_character_is_located(plain):
    with pytest.raises(UnknownToken) as e:
        plain.encode(pa.array(["ACGT", "ACRT"]))
    assert (e.value.row, e.value.offset, e.value.char) == (1, 2, "R")


def test_window_must_fit_the_model(plain):
    check_window_fits(plain, 100, 100)
    with pytest.raises(ConfigError, match="window.size=101 needs up to 101 tokens"):
        check_window_fits(plain, 101, 100)


def test_ids_are_int32(plain):
    ids = plain.encode(pa.array(["ACGTN"]))
    assert ids.type == pa.list_(pa.int32())
    assert np.array_equal(ids.values.to_numpy(), [4, 5, 6, 7, 8])


def test_loaded_once_without_transformers(tiny_model):
    """A local tokenizer.json is read by `tokenizers` itself, with the same table as
    transformers' tokenizer; the table travels pickled, without any tokenizer."""
    import pickle

    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    assert tok._backend is not None and tok._hf is None  # transformers untouched
    with_hf = DnaTokenizer(TokenizerSpec(tiny_model))
    with_hf._backend = None  # the reference: transformers' AutoTokenizer
    assert (with_hf._build_fast_path()[0] == tok.lut).all()
    assert with_hf._unk_id() == tok._unk_id() is not None
    moved = pickle.loads(pickle.dumps(tok))
    assert moved._backend is None and moved._hf is None
    batch = pa.array(["ACGTN", "TTGA"], pa.large_string())
    assert moved.encode(batch).to_pylist() == hf_ids(tok, ["ACGTN", "TTGA"], False)


def test_a_non_char_tokenizer_is_loaded_again_on_the_worker(tiny_model, tmp_path):
    import pickle

    path = save_variant(tiny_model, tmp_path / "kmer", kmer=True)
    tok = DnaTokenizer(TokenizerSpec(path))
    moved = pickle.loads(pickle.dumps(tok))
    assert moved.lut is None and moved._backend is not None
    assert moved.encode(pa.array(["ACGTA", "NN"])).to_pylist() == hf_ids(
        tok, ["ACGTA", "NN"], False
    )
