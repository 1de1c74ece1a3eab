"""The Open Inference Protocol (KServe v2 REST) for one classifier: request parsing and response encoding.

A request carries exactly one input:

* ``input``: FP32, shape ``[B, C, H, W]``, already normalised (what the model itself takes), as JSON ``data`` (flat
  or nested, row-major) or as raw little-endian bytes with the binary tensor extension;
* ``image``: BYTES, shape ``[B]``, encoded image files (JPEG, PNG, ...) that the server decodes and preprocesses as
  ``mobilenet predict`` does. In JSON each element is the file in base64; with the binary extension each element
  is a 4-byte little-endian length followed by the file's bytes.

The one output is ``logits`` FP32 ``[B, classes]``. The classification extension (an output parameter
``classification: k``, or the same request parameter) replaces it with BYTES ``[B, k]`` strings
``"score:index:label"``, the score being the logit, as Triton writes them.

Everything a client can get wrong is a :class:`ProtocolError` carrying its HTTP status; nothing here touches the
model, so a bad request is refused before it can reach a batch.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
from dataclasses import dataclass, field

import numpy as np

from ..deploy.source import ModelInfo
from ..errors import MobileNetError

INPUT_TENSOR = "input"
INPUT_IMAGE = "image"
OUTPUT = "logits"
HEADER_LENGTH = "Inference-Header-Content-Length"  # the binary tensor extension's split of JSON and raw bytes


class ProtocolError(MobileNetError):
    """A request the server refuses, with the HTTP status to answer (4xx; 503 for a full queue)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class RequestedOutput:
    """One entry of the request's ``outputs``: whether to answer it in binary, and top-k classification."""

    binary: bool = False
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed infer request: a normalised float batch or encoded images, and how to answer."""

    id: str | None
    batch: np.ndarray | None = None            # (B, C, R, R) float32 for ``input``
    images: list[bytes] = field(default_factory=list)  # encoded files for ``image``
    output: RequestedOutput = field(default_factory=RequestedOutput)

    @property
    def size(self) -> int:
        return len(self.batch) if self.batch is not None else len(self.images)


def model_metadata(name: str, info: ModelInfo, extra: dict) -> dict:
    """The model metadata response: tensor names, datatypes and shapes, plus what a client needs to prepare
    inputs (α, resolution, normalisation, class names) under ``parameters``."""
    r = info.resolution
    return {
        "name": name, "versions": ["1"], "platform": "mobilenet",
        "inputs": [{"name": INPUT_TENSOR, "datatype": "FP32", "shape": [-1, info.in_chans, r, r]},
                   {"name": INPUT_IMAGE, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, info.num_classes]}],
        "parameters": {"model": info.name, "alpha": info.alpha, "resolution": r, "in_chans": info.in_chans,
                       "mean": list(info.mean), "std": list(info.std), "class_names": list(info.class_names),
                       **extra},
    }


def parse_infer(body: bytes, header_length: str | None, info: ModelInfo, max_batch: int) -> InferRequest:
    """Parses an infer request body (JSON, or JSON + raw tensors with the binary extension).

    Args:
        body: the whole request body.
        header_length: the ``Inference-Header-Content-Length`` header, if any.
        info: the served model, whose input shape the request must match.
        max_batch: the most images one request may carry.

    Raises:
        ProtocolError: anything malformed, with a message naming the field.
    """
    header, raw = _split_body(body, header_length)
    doc = _load_json(header)
    params = _mapping(doc.get("parameters", {}), "parameters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ProtocolError(f"give exactly one input: {INPUT_TENSOR!r} (FP32 [B, C, H, W]) or {INPUT_IMAGE!r} "
                            "(BYTES [B], encoded images)")
    req_id = doc.get("id")
    req = InferRequest(id=str(req_id) if req_id is not None else None,
                       output=_requested_output(doc.get("outputs"), params))
    tensor = _mapping(inputs[0], "inputs[0]")
    name, shape, datatype = tensor.get("name"), _shape(tensor.get("shape")), tensor.get("datatype")
    data, rest = _tensor_data(tensor, raw)
    if rest:
        raise ProtocolError(f"{len(rest)} bytes of binary data follow the inputs' binary_data_size")
    if name == INPUT_TENSOR:
        req.batch = _float_batch(shape, datatype, data, info)
    elif name == INPUT_IMAGE:
        req.images = _encoded_images(shape, datatype, data)
    else:
        raise ProtocolError(f"unknown input {name!r}; inputs are {INPUT_TENSOR!r} and {INPUT_IMAGE!r}")
    if req.size > max_batch:
        raise ProtocolError(f"a request may carry at most {max_batch} images (--max-batch), got {req.size}")
    return req


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a length within the {len(body)}-byte body")
    n = int(header_length)
    return body[:n], body[n:]


def _load_json(header: bytes) -> dict:
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"the request is not valid JSON: {e}") from None
    return _mapping(doc, "the request")


def _mapping(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _shape(value) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise ProtocolError(f"shape must be a list of non-negative integers, got {value!r}")
    return value


def _requested_output(outputs, params: dict) -> RequestedOutput:
    out = RequestedOutput(binary=params.get("binary_data_output") is True,
                          classification=_class_count(params.get("classification", 0)))
    if outputs is None:
        return out
    if not isinstance(outputs, list) or len(outputs) != 1:
        raise ProtocolError(f"outputs must list the one output {OUTPUT!r}")
    entry = _mapping(outputs[0], "outputs[0]")
    if entry.get("name") != OUTPUT:
        raise ProtocolError(f"unknown output {entry.get('name')!r}; the output is {OUTPUT!r}")
    oparams = _mapping(entry.get("parameters", {}), "outputs[0].parameters")
    if "binary_data" in oparams:
        out.binary = oparams["binary_data"] is True
    if "classification" in oparams:
        out.classification = _class_count(oparams["classification"])
    return out


def _class_count(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"classification must be an integer >= 0 (top-k), got {value!r}")
    return value


def _tensor_data(tensor: dict, raw: bytes):
    """The input's ``data`` (JSON) or its slice of the binary section, and the binary bytes left over."""
    tparams = _mapping(tensor.get("parameters", {}), "inputs[0].parameters")
    size = tparams.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise ProtocolError("the input has neither data nor parameters.binary_data_size")
        return tensor["data"], raw
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(raw):
        raise ProtocolError(f"binary_data_size {size!r} does not fit the {len(raw)} bytes of binary data")
    return memoryview(raw)[:size], raw[size:]


def _float_batch(shape: list[int], datatype, data, info: ModelInfo) -> np.ndarray:
    want = [info.in_chans, info.resolution, info.resolution]
    if datatype != "FP32":
        raise ProtocolError(f"input {INPUT_TENSOR!r} is FP32, got datatype {datatype!r}")
    if len(shape) != 4 or shape[1:] != want:
        hint = (f"; this model takes {info.in_chans}-channel images" if len(shape) == 4 and shape[1] != want[0]
                else "")
        raise ProtocolError(f"input {INPUT_TENSOR!r} has shape [B, {', '.join(map(str, want))}], got {shape}{hint}")
    if shape[0] == 0:
        raise ProtocolError("the batch is empty")
    n = int(np.prod(shape))
    if isinstance(data, memoryview):
        if len(data) != 4 * n:
            raise ProtocolError(f"shape {shape} needs {4 * n} bytes of FP32 data, got {len(data)}")
        return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape)
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"input data is not a (nested) list of numbers: {e}") from None
    if array.size != n:
        raise ProtocolError(f"shape {shape} needs {n} values, got {array.size}")
    return array.reshape(shape)


def _encoded_images(shape: list[int], datatype, data) -> list[bytes]:
    if datatype != "BYTES":
        raise ProtocolError(f"input {INPUT_IMAGE!r} is BYTES (encoded image files), got datatype {datatype!r}")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] == 0:
        raise ProtocolError(f"input {INPUT_IMAGE!r} has shape [B] or [B, 1] with B >= 1, got {shape}")
    items = _unpack_bytes(data) if isinstance(data, memoryview) else _base64_items(data)
    if len(items) != shape[0]:
        raise ProtocolError(f"shape {shape} needs {shape[0]} images, got {len(items)}")
    return items


def _unpack_bytes(data: memoryview) -> list[bytes]:
    items, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError("binary BYTES data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise ProtocolError(f"binary BYTES element of {n} bytes runs past the end of the data")
        items.append(bytes(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return items


def _base64_items(data) -> list[bytes]:
    rows = data if isinstance(data, list) else [data]
    flat = [x for row in rows for x in (row if isinstance(row, list) else [row])]
    if not all(isinstance(x, str) for x in flat):
        raise ProtocolError(f"input {INPUT_IMAGE!r} in JSON takes a list of base64 strings")
    try:
        return [base64.b64decode(x, validate=True) for x in flat]
    except binascii.Error as e:
        raise ProtocolError(f"input {INPUT_IMAGE!r} in JSON takes base64 strings: {e}") from None


class _ImageBytes(io.BytesIO):
    """An in-memory file that names itself in error messages as the request element it came from."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label


def decode_images(images: list[bytes], info: ModelInfo) -> np.ndarray:
    """Encoded image files -> the model's normalised (B, C, R, R) float32 batch, through the very function
    ``mobilenet predict`` uses on files (:func:`mobilenet.data.load_image`: resize the shorter side, centre crop,
    scale to [0, 1], convert channels, normalise).

    Raises:
        ProtocolError: naming the first element that is not a decodable image.
    """
    from ..data import load_image

    out = []
    for i, blob in enumerate(images):
        try:
            out.append(load_image(_ImageBytes(blob, f"{INPUT_IMAGE}[{i}]"), info.resolution, info.mean, info.std,
                                  info.in_chans))
        except MobileNetError as e:
            raise ProtocolError(str(e)) from None
    return np.stack([x.numpy() for x in out]).astype(np.float32, copy=False)


def encode_response(model_name: str, req: InferRequest, logits: np.ndarray,
                    class_names: list[str]) -> tuple[bytes, dict[str, str]]:
    """The infer response body and its extra headers: JSON, or JSON + raw output with the binary extension."""
    k = min(req.output.classification, logits.shape[1])
    if k:
        out = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(logits), k]}
        values = [v for row in _classify(logits, k, class_names) for v in row]
        raw = b"".join(struct.pack("<I", len(v)) + v for v in values) if req.output.binary else None
    else:
        out = {"name": OUTPUT, "datatype": "FP32", "shape": list(logits.shape)}
        raw = np.ascontiguousarray(logits, dtype="<f4").tobytes() if req.output.binary else None
    if raw is not None:
        out["parameters"] = {"binary_data_size": len(raw)}
    else:
        out["data"] = [v.decode() for v in values] if k else logits.astype(np.float32).ravel().tolist()
    doc = {"model_name": model_name, "model_version": "1", "outputs": [out]}
    if req.id is not None:
        doc["id"] = req.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if raw is None:
        return header, {}
    return header + raw, {HEADER_LENGTH: str(len(header))}


def _classify(logits: np.ndarray, k: int, class_names: list[str]) -> list[list[bytes]]:
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[f"{logits[b, i]:.6g}:{i}:{class_names[i]}".encode() for i in row] for b, row in enumerate(top)]
