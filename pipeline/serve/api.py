"""The OpenAI embeddings API as dnaembed answers it: request checks, errors, response bodies.

Pure Python and numpy (no Ray, no vLLM), so every rule here is tested without a server.

A request is OpenAI's (`model`, `input`: a string or a list of strings, `encoding_format`:
float | base64, `dimensions`, `user`) plus one extension object, `dnaembed`:
`{"columns": ["emb_l6_mean", "embedding"], "strands": "forward" | "reverse" | "merge"}`.
Each answer's `embedding` is the first column asked for (by default the server's default
column, see `default_column`); with more than one, every item also carries `columns`,
{name: vector}, in the same encoding.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import Strands
from pipeline.rows import DEFAULT_COLUMN

ENCODINGS = ("float", "base64")
EXTENSION = "dnaembed"
_REQUEST_KEYS = {"model", "input", "encoding_format", "dimensions", "user", EXTENSION}
_EXTENSION_KEYS = {"columns", "strands"}


class ApiError(Exception):
    """An HTTP error answered in OpenAI's shape: {"error": {message, type, param, code}}.

    `index` and `position`: the input and its 0-based base (or token) at fault, when one is."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        index: int | None = None,
        position: int | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.index, self.position = index, position

    def body(self) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            413: "invalid_request_error",
            503: "service_unavailable",
        }.get(self.status, "server_error")
        error: dict[str, Any] = {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }
        if self.index is not None:
            error["index"] = self.index
        if self.position is not None:
            error["position"] = self.position
        return {"error": error}


def bad_request(message: str, code: str, param: str | None = None, **where: int) -> ApiError:
    return ApiError(400, message, code, param, **where)


@dataclass(frozen=True)
class EmbeddingRequest:
    inputs: list[str]
    columns: list[str]
    strands: Strands
    encoding_format: str
    model: str | None


def default_column(columns: list[str]) -> str:
    """What `embedding` holds unless a request asks: the batch pipeline's default column
    (last layer, mean) when the server computes it, else its first column."""
    return DEFAULT_COLUMN if DEFAULT_COLUMN in columns else columns[0]


def parse_request(
    body: Any,
    served: str,
    columns: list[str],
    dimension: int,
    strands: Strands,
    max_inputs: int,
) -> EmbeddingRequest:
    """Check a decoded JSON body against the API and this server; raise ApiError."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "invalid_body")
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise bad_request(
            f"unknown field(s) {unknown}: this server takes {sorted(_REQUEST_KEYS)}",
            "unknown_field",
            unknown[0],
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"model must be a string, got {model!r}", "invalid_model", "model")
    if model is not None and model != served:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; this server serves {served!r}",
            "model_not_found",
            "model",
        )
    encoding = body.get("encoding_format")
    encoding = "float" if encoding is None else encoding
    if encoding not in ENCODINGS:
        raise bad_request(
            f"encoding_format must be one of {list(ENCODINGS)}, got {encoding!r}",
            "invalid_encoding_format",
            "encoding_format",
        )
    dims = body.get("dimensions")
    if dims is not None and (type(dims) is not int or dims != dimension):
        raise bad_request(
            f"dimensions={dims!r}: this model's embeddings have {dimension} and are never "
            "shortened",
            "invalid_dimensions",
            "dimensions",
        )
    inputs = _inputs(body.get("input"), max_inputs)
    ext = body.get(EXTENSION)
    ext = {} if ext is None else ext
    if not isinstance(ext, dict) or set(ext) - _EXTENSION_KEYS:
        raise bad_request(
            f"{EXTENSION} must be an object with keys among {sorted(_EXTENSION_KEYS)}, got {ext!r}",
            "invalid_extension",
            EXTENSION,
        )
    asked = ext.get("columns")
    if asked is None:
        asked = [default_column(columns)]
    if (
        not isinstance(asked, list)
        or not asked
        or not all(isinstance(c, str) for c in asked)
        or len(set(asked)) != len(asked)
    ):
        raise bad_request(
            f"{EXTENSION}.columns must list column names once each, got {asked!r}",
            "invalid_columns",
            f"{EXTENSION}.columns",
        )
    missing = [c for c in asked if c not in columns]
    if missing:
        raise bad_request(
            f"{EXTENSION}.columns: {missing} not computed by this server; it computes "
            f"{columns} (set by embed.layers and embed.poolings when it starts)",
            "unknown_column",
            f"{EXTENSION}.columns",
        )
    chosen = ext.get("strands")
    chosen = strands if chosen is None else chosen
    try:
        chosen = Strands(chosen)
    except ValueError:
        raise bad_request(
            f"{EXTENSION}.strands must be one of {[s.value for s in Strands]}, got {chosen!r}",
            "invalid_strands",
            f"{EXTENSION}.strands",
        ) from None
    return EmbeddingRequest(inputs, asked, chosen, encoding, model)


def _inputs(value: Any, max_inputs: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise bad_request("input must be a DNA string or a list of them", "invalid_input", "input")
    if not value:
        raise bad_request("input is an empty list", "empty_input", "input")
    if len(value) > max_inputs:
        raise ApiError(
            413,
            f"{len(value)} inputs in one request; this server takes at most {max_inputs} "
            "(serve.max_inputs)",
            "too_many_inputs",
            "input",
        )
    for i, s in enumerate(value):
        if not isinstance(s, str):
            raise bad_request(
                f"input[{i}] is {type(s).__name__}, not a string: this server takes DNA "
                "sequences, not token ids",
                "invalid_input",
                "input",
                index=i,
            )
        if not s:
            raise bad_request(f"input[{i}] is empty", "empty_input", "input", index=i)
    return value


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    """float: a JSON list; base64: the float32 little-endian bytes (OpenAI's encoding)."""
    v = np.ascontiguousarray(vector, dtype="<f4")
    if encoding == "base64":
        return base64.b64encode(v.tobytes()).decode("ascii")
    return v.tolist()


def embeddings_response(
    request: EmbeddingRequest,
    served: str,
    vectors: list[dict[str, np.ndarray]],
    tokens: int,
) -> dict[str, Any]:
    """OpenAI's response body: one item per input, in input order (`index`)."""
    data = []
    for i, by_column in enumerate(vectors):
        item: dict[str, Any] = {
            "object": "embedding",
            "index": i,
            "embedding": encode_vector(by_column[request.columns[0]], request.encoding_format),
        }
        if len(request.columns) > 1:
            item["columns"] = {
                c: encode_vector(by_column[c], request.encoding_format) for c in request.columns
            }
        data.append(item)
    return {
        "object": "list",
        "data": data,
        "model": served,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        EXTENSION: {"columns": request.columns, "strands": str(request.strands)},
    }
