"""Property-based fuzzing of every parser the package owns: each input either works or raises MobileNetError (the
CLI: exit 2 with one line on stderr), never another exception, a crash or a hang.

The normal run tries ``FUZZ_EXAMPLES`` (default 50) inputs per parser from seeds that start near valid files;
``make fuzz`` runs thousands. The examples pinned with ``@example`` are the inputs that once broke a parser.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mobilenet.checkpoint import FORMAT, read_checkpoint, save_atomic
from mobilenet.cli.main import main
from mobilenet.cli.options import parse_amount
from mobilenet.errors import MobileNetError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 50, database=None,
                suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}  # inputs tried per parser, printed at the end of the run (conftest.py)


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@contextlib.contextmanager
def _file(name: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        yield path


def _mutate(data: bytes, draw) -> bytes:
    """A few byte flips, a cut or an insertion: the inputs a damaged download or disk produces."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not buf:
            break
        kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        i = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = draw(st.binary(max_size=16))
        else:
            buf[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
    return bytes(buf)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), st.composite(lambda draw: _mutate(seed, draw))())


# ---------------------------------------------------------------------------------------------------------------
# IDX

@st.composite
def idx_files(draw) -> bytes:
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]))
    ndim = draw(st.integers(0, 5))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    size = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    body = bytes(min(count * size, 4096)) if draw(st.booleans()) else draw(st.binary(max_size=64))
    return _mutate(bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims) + body, draw)


@FUZZ
@given(data=st.one_of(idx_files(), st.binary(max_size=128)), compress=st.booleans())
@example(data=bytes([0, 0, 8, 2]) + struct.pack(">2I", 2**32 - 1, 0), compress=False)
@example(data=bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 4), compress=False)  # product wraps to 0
@example(data=bytes([0, 0, 0x0C, 4]) + struct.pack(">4I", 0, 0x3CC, 0x2E71D5F, 0x2E7459E), compress=False)
def test_idx(data, compress):
    from mobilenet.data.idx import read_idx_file

    _count("IDX file")
    name, raw = ("x-idx3-ubyte.gz", gzip.compress(data)) if compress else ("x-idx3-ubyte", data)
    with _file(name, raw) as path:
        try:
            array = read_idx_file(path)
        except MobileNetError:
            return
        assert array.size * array.itemsize == len(data) - 4 - 4 * data[3]


# ---------------------------------------------------------------------------------------------------------------
# CIFAR batches (pickles)

_leaf = st.one_of(st.integers(-300, 300), st.integers(), st.binary(max_size=8), st.text(max_size=8), st.none(),
                  st.floats(allow_nan=True), st.just(np.zeros((2, 3072), np.uint8)), st.just(np.arange(3)))
_values = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner)),
                       max_leaves=8)


@st.composite
def cifar_batches(draw) -> bytes:
    n = draw(st.integers(0, 3))
    batch = {b"data": draw(st.one_of(st.just(np.zeros((n, 3072), np.uint8)), _values)),
             b"labels": draw(st.one_of(st.just(list(range(n))), _values)),
             b"label_names": draw(st.one_of(st.just([b"a", b"b", b"c"]), _values))}
    for key in draw(st.lists(st.sampled_from(list(batch)), max_size=2)):
        batch.pop(key, None)
    raw = pickle.dumps(batch, protocol=draw(st.sampled_from([2, 4, 5])))
    return _mutate(raw, draw) if draw(st.booleans()) else raw


@FUZZ
@given(data=st.one_of(cifar_batches(), st.binary(max_size=128)))
@example(data=pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], 1], b"label_names": [b"a"]}))
def test_cifar(data):
    from mobilenet.data.load import load_data

    _count("CIFAR batch")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("batches.meta", "data_batch_1", "test_batch"):
            (Path(tmp) / name).write_bytes(data)
        try:
            bundle = load_data(tmp, data_format="cifar", resolution=8)
        except MobileNetError:
            return
        x, y = bundle.train[0]
        assert x.shape == (3, 8, 8) and 0 <= y < len(bundle.class_names)


# ---------------------------------------------------------------------------------------------------------------
# Image-folder entries: any bytes named like an image

def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, format=fmt)
    return buf.getvalue()


_IMAGES = {suffix: _image_bytes(fmt) for suffix, fmt in
           ((".png", "PNG"), (".jpg", "JPEG"), (".gif", "GIF"), (".bmp", "BMP"), (".tif", "TIFF"), (".webp", "WEBP"))}


@FUZZ
@given(suffix=st.sampled_from(sorted(_IMAGES)), data=st.data())
def test_image_entries(suffix, data):
    from mobilenet.data import load_image
    from mobilenet.data.folder import read_image_folder

    _count("image file")
    raw = data.draw(mutated(_IMAGES[suffix]))
    with tempfile.TemporaryDirectory() as tmp:
        for cls in ("a", "b"):
            (Path(tmp) / cls).mkdir()
            (Path(tmp) / cls / f"x{suffix}").write_bytes(raw)
        try:
            x = load_image(Path(tmp) / "a" / f"x{suffix}", 8)
            assert x.shape == (3, 8, 8) and torch.isfinite(x).all()
        except MobileNetError:
            pass
        try:
            splits = read_image_folder(Path(tmp))  # unreadable files are skipped with a reason, never raised
        except MobileNetError:
            return
        assert len(splits.train) + len(splits.skipped) == 2 - len(splits.val)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and safetensors metadata

def _checkpoint_bytes(obj: dict, trailer: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        if trailer:
            return save_atomic(obj, Path(tmp) / "c.pt").read_bytes()
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _good_checkpoint() -> dict:
    from mobilenet.models import create_model

    kwargs = {"alpha": 0.25, "resolution": 32, "num_classes": 3, "in_chans": 3}
    model = create_model("mobilenet_v1", **kwargs)
    return {"format": FORMAT, "version": 1, "config": {"model": "mobilenet_v1"}, "model_kwargs": kwargs,
            "model": model.state_dict(), "class_names": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.5] * 3,
            "in_chans": 3}


_GOOD = _good_checkpoint()
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(), st.text(max_size=12))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=6)


@st.composite
def checkpoints(draw) -> bytes:
    obj = dict(_GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(obj)), max_size=3)):
        obj[key] = draw(st.one_of(_json, st.just({"w": torch.zeros(2)}), st.just({})))
    if draw(st.booleans()):  # a legacy file without the checksum: damage reaches the archive reader
        return _mutate(_checkpoint_bytes(obj, trailer=False), draw)
    return _checkpoint_bytes(obj, trailer=True)


@FUZZ
@given(data=st.one_of(checkpoints(), st.binary(max_size=64)))
@example(data=_checkpoint_bytes({**_GOOD, "config": []}, trailer=True))
@example(data=_checkpoint_bytes({**_GOOD, "model_kwargs": {"depth": 3}}, trailer=True))
def test_checkpoint(data):
    from mobilenet.evaluate import load_checkpoint

    _count("checkpoint")
    with _file("c.pt", data) as path:
        try:
            read_checkpoint(path)
            model, ckpt = load_checkpoint(path)
        except MobileNetError:
            return
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape[1] == len(ckpt["class_names"])


def _safetensors(header: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


@st.composite
def safetensors_files(draw) -> bytes:
    from safetensors.torch import save

    from mobilenet.models import create_model

    state = create_model("mobilenet_v1", alpha=0.25, num_classes=3).state_dict()
    info = {"model": "mobilenet_v1", "options": {"alpha": 0.25, "num_classes": 3},
            "preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    for key in draw(st.lists(st.sampled_from(["model", "options", "preprocessing"]), max_size=2)):
        info[key] = draw(_json)
    if draw(st.booleans()):
        info["options"] = {**info.get("options", {}), **draw(st.dictionaries(
            st.sampled_from(["alpha", "resolution", "num_classes", "in_chans", "padding", "bn_eps", "act", "x"]),
            _json, max_size=2))} if isinstance(info.get("options"), dict) else info.get("options")
    meta = draw(st.one_of(st.just(json.dumps(info)), st.text(max_size=20)))
    raw = save({k: v.contiguous() for k, v in state.items()}, metadata={"mobilenet": meta})
    if draw(st.booleans()):  # damage the JSON header only: the tensors' table and offsets
        size = struct.unpack("<Q", raw[:8])[0]
        return _safetensors(_mutate(raw[8:8 + size], draw), raw[8 + size:])
    return raw


@FUZZ
@given(data=st.one_of(safetensors_files(), st.binary(max_size=64),
                      st.builds(_safetensors, _json.map(lambda j: json.dumps(j).encode()), st.binary(max_size=16))))
@example(data=_safetensors(json.dumps({"__metadata__": {"mobilenet": "[1]"}}).encode(), b""))
def test_weights(data):
    from mobilenet.models import create_model

    _count("safetensors/weights")
    with _file("w.safetensors", data) as path:
        try:
            model = create_model("mobilenet_v1", weights=path)
        except MobileNetError:
            return
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, model.num_classes)


# ---------------------------------------------------------------------------------------------------------------
# Keras .h5 (legacy layout: model_weights/<layer>/<weight> with layer_names and weight_names attributes)

def _keras_h5(widths=(8, 8)) -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [b"conv1", b"conv1_bn"]
        conv = root.create_group("conv1")
        conv.attrs["weight_names"] = [b"conv1/kernel:0"]
        conv.create_dataset("conv1/kernel:0", data=np.zeros((3, 3, 3, widths[0]), np.float32))
        bn = root.create_group("conv1_bn")
        names = [f"conv1_bn/{k}:0".encode() for k in ("gamma", "beta", "moving_mean", "moving_variance")]
        bn.attrs["weight_names"] = names
        for name in names:
            bn.create_dataset(name.decode(), data=np.ones(widths[1], np.float32))
    return buf.getvalue()


@st.composite
def keras_files(draw) -> bytes:
    raw = _keras_h5(draw(st.sampled_from([(8, 8), (8, 4), (0, 8)])))
    return _mutate(raw, draw) if draw(st.booleans()) else raw


@FUZZ
@given(data=st.one_of(keras_files(), st.binary(max_size=64)))
def test_keras_h5(data):
    pytest.importorskip("h5py")
    from mobilenet.convert.keras import import_keras, read_layers

    _count("keras/h5")
    with _file("m.h5", data) as path:
        try:
            read_layers(path)
            import_keras(path, "MobileNet", alpha=0.25, resolution=128)
        except MobileNetError:
            return
    raise AssertionError("a two-layer file cannot be a whole MobileNet")


# ---------------------------------------------------------------------------------------------------------------
# ONNX metadata

def _onnx_bytes(meta: dict[str, str]) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    proto = helper.make_model(graph)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


_GOOD_META = {"model": "mobilenet_v1", "alpha": "0.25", "resolution": "32", "num_classes": "3", "in_chans": "3",
              "class_names": '["a", "b", "c"]', "mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]"}


@st.composite
def onnx_files(draw) -> bytes:
    meta = {f"mobilenet.{k}": v for k, v in _GOOD_META.items()}
    for key in draw(st.lists(st.sampled_from(sorted(meta)), max_size=3)):
        meta[key] = draw(st.one_of(_json.map(json.dumps), st.text(max_size=10)))
    raw = _onnx_bytes(meta)
    return _mutate(raw, draw) if draw(st.booleans()) else raw


@FUZZ
@given(data=st.one_of(onnx_files(), st.binary(max_size=64)))
@example(data=_onnx_bytes({**{f"mobilenet.{k}": v for k, v in _GOOD_META.items()}, "mobilenet.mean": "5"}))
@example(data=_onnx_bytes({f"mobilenet.{k}": v for k, v in _GOOD_META.items()}).replace(  # key not UTF-8
    b"\x0fmobilenet.model", b"\x0f\x80obilenet.model"))
def test_onnx_metadata(data):
    from mobilenet.deploy import read_info

    _count("ONNX metadata")
    with _file("m.onnx", data) as path:
        try:
            info = read_info(str(path))
        except MobileNetError:
            return
        assert isinstance(info.name, str) and len(info.class_names) == info.num_classes >= 1
        assert len(info.mean) == len(info.std) == info.in_chans and all(s > 0 for s in info.std)


# ---------------------------------------------------------------------------------------------------------------
# CLI arguments

_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10, 10**20).map(str),
                     st.sampled_from(["0.25", "1", "1e3", "1e308", "-0", "nan", "inf", "0x10", "1_0", " 2", "", "١"]),
                     st.text(max_size=6))


@FUZZ
@given(text=st.one_of(st.text(max_size=12), st.from_regex(r"\s*[0-9]{0,25}(\.[0-9]{0,5})?\s*[kKmMgGbB]?\s*",
                                                           fullmatch=True)))
@example(text="1e3M")
@example(text="0.0000000001")
def test_amount(text):
    _count("budget amount")
    try:
        value = parse_amount(text)
    except MobileNetError:
        return
    assert isinstance(value, int) and value >= 1


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@st.composite
def light_argv(draw) -> list[str]:
    """Commands that finish in about a second: the cost and search commands, with any options and values."""
    command = draw(st.sampled_from(["list", "summary", "grid", "search"]))
    names = st.one_of(st.sampled_from(["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v1*",
                                       "nonexistent", "", "-x"]), st.text(max_size=8))
    argv = [command]
    if command in ("summary", "grid") and draw(st.booleans()):
        argv.append(draw(names))
    options = {"list": ["--cost"], "summary": ["--alpha", "--resolution", "--rho", "--num-classes", "--json"],
               "grid": ["--alphas", "--resolutions"],
               "search": ["--macs", "--params", "--latency-ms", "--models", "--alphas", "--resolutions", "--json",
                          "--results"]}[command] + ["--bogus"]
    lists = st.lists(_numbers, min_size=0, max_size=3).map(",".join)
    for option in draw(st.lists(st.sampled_from(options), max_size=3)):
        argv.append(option)
        if option in ("--cost", "--json", "--bogus"):
            continue
        value = {"--alphas": lists, "--resolutions": lists, "--models": st.sampled_from(["v1", "v2,v3", "x", ""]),
                 "--macs": st.one_of(_numbers, st.sampled_from(["150M", "1G", "3k", "10"])),
                 "--params": st.one_of(_numbers, st.sampled_from(["4M", "1e9"])),
                 "--results": st.sampled_from(["/nonexistent.json", "/dev/null", "/"])}.get(option, _numbers)
        argv.append(draw(value))
    if command == "list" and "--cost" in argv:
        argv.insert(1, "mobilenet_v1_100")  # one model: the full table is slow
    if command == "search" and not {"--macs", "--params", "--latency-ms"} & set(argv):
        argv += ["--macs", "150M"]
    if command in ("grid", "search") and "--alphas" not in argv:
        argv += ["--alphas", "0.5"]
    if command in ("grid", "search") and "--resolutions" not in argv:
        argv += ["--resolutions", "96"]
    return argv


@settings(FUZZ, max_examples=max(10, EXAMPLES // 2))  # each builds and costs real models
@given(argv=light_argv())
@example(argv=["summary", "mobilenet_v1", "--alpha", "1000"])
@example(argv=["summary", "mobilenet_v1", "--num-classes", "10000000000"])
@example(argv=["grid", "mobilenet_v2", "--alphas", "1e5", "--resolutions", "96"])
@example(argv=["grid", "--alphas", "1482911.0", "--resolutions", "96"])
@example(argv=["search", "--macs", "1.0", "--alphas", "0.5", "--resolutions", "96"])
def test_cli_commands(argv, capsys):
    _count("CLI command line")
    code, err = _run(argv, capsys)
    if code == 1:  # search's "no result" status, like grep's
        assert argv[0] == "search" and err.startswith("nothing fits") and err.count("\n") == 1, err
        return
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and "error" in err, err


@st.composite
def heavy_argv(draw) -> list[str]:
    """Commands that would train, export or benchmark: their arguments are parsed (never run)."""
    command = draw(st.sampled_from(["train", "eval", "predict", "export", "quantize", "bench", "convert",
                                    "bench-train", "reproduce"]))
    pool = ["--alpha", "--resolution", "--epochs", "--batch-size", "--lr", "--momentum", "--ema", "--dropout",
            "--label-smoothing", "--warmup-epochs", "--checkpoint-every", "--max-steps", "--workers", "--in-chans",
            "--optimizer", "--schedule", "--augment", "--amp", "--no-amp", "--resume", "--checkpoint", "--top-k",
            "--batch", "--backends", "--threads", "--mean", "--std", "--from", "--to", "--model", "--out",
            "--seeds", "--budget-minutes", "--limit", "--val-fraction", "--seed", "--opset", "--sha256"]
    argv = [command] + draw(st.lists(st.sampled_from(["mobilenet_v1", "x.pt"]), max_size=1))
    for option in draw(st.lists(st.sampled_from(pool), max_size=4)):
        argv += [option, draw(st.one_of(_numbers, st.lists(_numbers, max_size=3).map(",".join)))]
    return argv


@FUZZ
@given(argv=heavy_argv())
def test_cli_arguments_parse_or_exit_2_with_one_line(argv, capsys):
    from mobilenet.cli.main import build_parser

    _count("CLI arguments (parsed)")
    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err




@pytest.fixture(scope="module", autouse=True)
def _quiet_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
