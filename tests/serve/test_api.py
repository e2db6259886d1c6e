"""pipeline/serve/api.py: the OpenAI embeddings API's request checks, errors and responses."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from pipeline.config import Strands
from pipeline.serve.api import (
    ApiError,
    EmbeddingRequest,
    default_column,
    embeddings_response,
    encode_vector,
    parse_request,
)

SERVED = "genos-test"
COLUMNS = ["emb_l6_mean", "embedding", "emb_l6_max"]
DIM = 4
MAX_INPUTS = 3


def parse(body, columns=COLUMNS, strands=Strands.forward, max_inputs=MAX_INPUTS):
    return parse_request(body, SERVED, columns, DIM, strands, max_inputs)


def refused(body, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body, **kwargs)
    return info.value


# ---- accepted requests ------------------------------------------------------------------


def test_a_string_is_one_input_with_the_defaults():
    req = parse({"model": SERVED, "input": "ACGT"})
    assert req == EmbeddingRequest(["ACGT"], ["embedding"], Strands.forward, "float", SERVED)


def test_a_list_of_strings_keeps_its_order():
    req = parse({"input": ["ACGT", "GG", "NNNA"]})
    assert req.inputs == ["ACGT", "GG", "NNNA"]


def test_model_may_be_omitted():
    req = parse({"input": "ACGT"})
    assert req.model is None and req.inputs == ["ACGT"]


def test_the_server_strands_are_the_default_and_a_request_may_choose():
    assert parse({"input": "A"}, strands=Strands.merge).strands is Strands.merge
    for s in Strands:
        req = parse({"input": "A", "dnaembed": {"strands": s.value}}, strands=Strands.forward)
        assert req.strands is s


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_encoding_formats(encoding):
    assert parse({"input": "A", "encoding_format": encoding}).encoding_format == encoding


def test_dimensions_equal_to_the_servers_is_accepted():
    assert parse({"input": "A", "dimensions": DIM}).inputs == ["A"]


def test_exactly_max_inputs_is_accepted():
    assert len(parse({"input": ["A"] * MAX_INPUTS}).inputs) == MAX_INPUTS


def test_columns_asked_are_kept_in_order():
    req = parse({"input": "A", "dnaembed": {"columns": ["emb_l6_max", "embedding"]}})
    assert req.columns == ["emb_l6_max", "embedding"]


def test_user_is_accepted():
    assert parse({"input": "A", "user": "someone"}).inputs == ["A"]


# ---- refused requests -------------------------------------------------------------------


@pytest.mark.parametrize("body", [["ACGT"], "ACGT", None, 3])
def test_a_body_that_is_not_an_object(body):
    e = refused(body)
    assert (e.status, e.code) == (400, "invalid_body")


@pytest.mark.parametrize("field", ["truncate_prompt_tokens", "truncate", "priority", "inputs"])
def test_unknown_top_level_fields_are_refused(field):
    e = refused({"input": "ACGT", field: 10})
    assert (e.status, e.code, e.param) == (400, "unknown_field", field)
    assert field in e.message


def test_truncation_is_never_accepted_even_when_harmless():
    for value in (None, -1, 0, 1 << 20):
        e = refused({"input": "ACGT", "truncate_prompt_tokens": value})
        assert e.code == "unknown_field" and e.param == "truncate_prompt_tokens"


def test_a_wrong_model_is_not_found():
    e = refused({"model": "text-embedding-3-small", "input": "ACGT"})
    assert (e.status, e.code, e.param) == (404, "model_not_found", "model")
    assert "text-embedding-3-small" in e.message and SERVED in e.message


def test_empty_list():
    e = refused({"input": []})
    assert (e.status, e.code, e.param, e.index) == (400, "empty_input", "input", None)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_an_empty_string_names_its_index(i):
    inputs = ["ACGT", "GGCC", "TTAA"]
    inputs[i] = ""
    e = refused({"input": inputs})
    assert (e.status, e.code, e.param, e.index) == (400, "empty_input", "input", i)
    assert f"input[{i}]" in e.message


def test_a_single_empty_string():
    e = refused({"input": ""})
    assert (e.status, e.code, e.index) == (400, "empty_input", 0)


@pytest.mark.parametrize(
    "inputs,i",
    [
        ([1, 2, 3], 0),  # token ids
        (["ACGT", [101, 7592]], 1),  # a list of token-id lists
        (["ACGT", "GG", None], 2),
        (["ACGT", {"seq": "A"}], 1),
    ],
)
def test_a_non_string_element_names_its_index(inputs, i):
    e = refused({"input": inputs})
    assert (e.status, e.code, e.param, e.index) == (400, "invalid_input", "input", i)
    assert f"input[{i}]" in e.message


@pytest.mark.parametrize("value", [None, 42, {"a": "ACGT"}])
def test_input_missing_or_of_the_wrong_type(value):
    body = {} if value is None else {"input": value}
    e = refused(body)
    assert (e.status, e.code, e.param) == (400, "invalid_input", "input")


@pytest.mark.parametrize("encoding", ["binary", "FLOAT", "float16", 1])
def test_other_encoding_formats(encoding):
    e = refused({"input": "A", "encoding_format": encoding})
    assert (e.status, e.code, e.param) == (400, "invalid_encoding_format", "encoding_format")


@pytest.mark.parametrize("dims", [DIM - 1, DIM + 1, 1, 0])
def test_dimensions_other_than_the_servers(dims):
    e = refused({"input": "A", "dimensions": dims})
    assert (e.status, e.code, e.param) == (400, "invalid_dimensions", "dimensions")
    assert str(DIM) in e.message


def test_too_many_inputs():
    e = refused({"input": ["A"] * (MAX_INPUTS + 1)})
    assert (e.status, e.code, e.param) == (413, "too_many_inputs", "input")
    assert str(MAX_INPUTS) in e.message
    assert e.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "columns,code",
    [
        (["emb_l99_mean"], "unknown_column"),
        (["embedding", "nope"], "unknown_column"),
        (["embedding", "embedding"], "invalid_columns"),
        ([], "invalid_columns"),
        ("embedding", "invalid_columns"),
        ([1], "invalid_columns"),
    ],
)
def test_bad_columns(columns, code):
    e = refused({"input": "A", "dnaembed": {"columns": columns}})
    assert (e.status, e.code, e.param) == (400, code, "dnaembed.columns")


def test_an_unknown_column_is_named_with_what_the_server_computes():
    e = refused({"input": "A", "dnaembed": {"columns": ["emb_l99_mean"]}})
    assert "emb_l99_mean" in e.message and "emb_l6_max" in e.message


@pytest.mark.parametrize("strands", ["both", "Forward", "+", 1])
def test_bad_strands(strands):
    e = refused({"input": "A", "dnaembed": {"strands": strands}})
    assert (e.status, e.code, e.param) == (400, "invalid_strands", "dnaembed.strands")


@pytest.mark.parametrize(
    "ext",
    [
        {"columns": ["embedding"], "layers": [6]},
        {"truncate": True},
        {"strand": "merge"},
        "merge",
        ["embedding"],
    ],
)
def test_a_bad_extension(ext):
    e = refused({"input": "A", "dnaembed": ext})
    assert (e.status, e.code, e.param) == (400, "invalid_extension", "dnaembed")


# ---- the default column -----------------------------------------------------------------


def test_default_column():
    assert default_column(["emb_l6_mean", "embedding"]) == "embedding"
    assert default_column(["embedding"]) == "embedding"
    assert default_column(["emb_l6_max", "emb_l6_mean"]) == "emb_l6_max"
    assert parse({"input": "A"}, columns=["emb_l3_last", "emb_l6_max"]).columns == ["emb_l3_last"]


# ---- responses --------------------------------------------------------------------------


def _vectors(n: int, columns: list[str]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{c: rng.standard_normal(DIM).astype(np.float32) for c in columns} for _ in range(n)]


def _decode(value) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


def test_response_items_are_in_input_order_with_the_first_column():
    req = parse({"input": ["A", "C", "G"]})
    vectors = _vectors(3, COLUMNS)
    body = embeddings_response(req, SERVED, vectors, tokens=17)
    assert body["object"] == "list" and body["model"] == SERVED
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    for item, v in zip(body["data"], vectors, strict=True):
        assert item["object"] == "embedding"
        assert isinstance(item["embedding"], list) and len(item["embedding"]) == DIM
        np.testing.assert_array_equal(_decode(item["embedding"]), v["embedding"])
        assert "columns" not in item
    assert body["usage"] == {"prompt_tokens": 17, "total_tokens": 17}
    assert body["dnaembed"] == {"columns": ["embedding"], "strands": "forward"}


def test_float_and_base64_decode_to_the_same_float32_values():
    vectors = _vectors(2, COLUMNS)
    vectors[0]["embedding"] = np.array([1.5, -0.0, 3.4028235e38, 1e-45], dtype=np.float32)
    got = {}
    for encoding in ("float", "base64"):
        req = parse({"input": ["A", "C"], "encoding_format": encoding})
        got[encoding] = embeddings_response(req, SERVED, vectors, tokens=2)["data"]
    for f, b, v in zip(got["float"], got["base64"], vectors, strict=True):
        assert isinstance(b["embedding"], str)
        decoded = _decode(b["embedding"])
        assert decoded.dtype == np.dtype("<f4") and decoded.shape == (DIM,)
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))
        np.testing.assert_array_equal(decoded, v["embedding"])


def test_base64_is_little_endian_float32_whatever_the_input_dtype():
    v = np.array([1.0, 2.0, -3.25, 0.1], dtype=">f8")  # big-endian float64
    out = encode_vector(v, "base64")
    np.testing.assert_array_equal(_decode(out), v.astype(np.float32))
    assert base64.b64decode(out) == np.array([1.0, 2.0, -3.25, 0.1], dtype="<f4").tobytes()
    assert encode_vector(v, "float") == [float(np.float32(x)) for x in v]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_several_columns_give_every_item_a_columns_dict(encoding):
    asked = ["emb_l6_max", "embedding"]
    req = parse({"input": ["A", "C"], "encoding_format": encoding, "dnaembed": {"columns": asked}})
    vectors = _vectors(2, COLUMNS)
    body = embeddings_response(req, SERVED, vectors, tokens=4)
    for item, v in zip(body["data"], vectors, strict=True):
        assert set(item["columns"]) == set(asked)
        for c in asked:
            np.testing.assert_array_equal(_decode(item["columns"][c]), v[c])
        # `embedding` is the first column asked for, not the server's default.
        np.testing.assert_array_equal(_decode(item["embedding"]), v["emb_l6_max"])
    assert body["dnaembed"]["columns"] == asked


def test_one_column_asked_gives_no_columns_dict():
    req = parse({"input": "A", "dnaembed": {"columns": ["emb_l6_mean"]}})
    vectors = _vectors(1, COLUMNS)
    (item,) = embeddings_response(req, SERVED, vectors, tokens=1)["data"]
    assert "columns" not in item
    np.testing.assert_array_equal(_decode(item["embedding"]), vectors[0]["emb_l6_mean"])


def test_response_reports_the_strands_used():
    req = parse({"input": "A", "dnaembed": {"strands": "merge"}})
    body = embeddings_response(req, SERVED, _vectors(1, COLUMNS), tokens=1)
    assert body["dnaembed"]["strands"] == "merge"


# ---- error bodies -----------------------------------------------------------------------


def test_error_body_has_openais_shape():
    e = refused({"model": "other", "input": "A"})
    assert e.body() == {
        "error": {
            "message": e.message,
            "type": "not_found_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_error_body_carries_the_index_only_when_set():
    e = refused({"input": ["A", ""]})
    err = e.body()["error"]
    assert err["index"] == 1 and "position" not in err
    assert set(err) == {"message", "type", "param", "code", "index"}
    assert err["type"] == "invalid_request_error"
    assert "index" not in refused({"input": []}).body()["error"]


def test_error_body_position_and_index_zero_are_kept():
    err = ApiError(400, "bad base", "invalid_sequence", "input", index=0, position=0).body()
    assert err["error"]["index"] == 0 and err["error"]["position"] == 0
    err = ApiError(400, "bad base", "invalid_sequence", "input", index=2, position=17).body()
    assert (err["error"]["index"], err["error"]["position"]) == (2, 17)


@pytest.mark.parametrize(
    "status,kind",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (503, "service_unavailable"),
        (500, "server_error"),
    ],
)
def test_error_types_by_status(status, kind):
    body = ApiError(status, "m", "c").body()
    assert body == {"error": {"message": "m", "type": kind, "param": None, "code": "c"}}


def test_api_error_is_an_exception_with_its_message():
    e = ApiError(400, "input[0] is empty", "empty_input")
    assert isinstance(e, Exception) and str(e) == "input[0] is empty"


# ---- types are checked, not coerced ------------------------------------------------------


@pytest.mark.parametrize("ext", [[], "", 0, False])
def test_an_extension_that_is_not_an_object_is_refused_even_when_falsy(ext):
    assert refused({"input": "A", "dnaembed": ext}).code == "invalid_extension"


def test_an_empty_encoding_format_is_refused():
    assert refused({"input": "A", "encoding_format": ""}).code == "invalid_encoding_format"


def test_null_means_the_default_for_every_extension_key():
    req = parse(
        {"input": "A", "dnaembed": {"strands": None, "columns": None}}, strands=Strands.merge
    )
    assert req.strands is Strands.merge and req.columns == ["embedding"]


@pytest.mark.parametrize("dims", [float(DIM), True, str(DIM)])
def test_dimensions_must_be_an_integer(dims):
    assert refused({"input": "A", "dimensions": dims}).code == "invalid_dimensions"


def test_a_model_that_is_not_a_string_is_a_bad_request():
    e = refused({"input": "A", "model": [SERVED]})
    assert e.status == 400 and e.code == "invalid_model"
