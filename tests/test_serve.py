"""``mobilenet serve``: the Open Inference Protocol server, driven by tritonclient and by plain HTTP."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

_NEEDED = ("starlette", "uvicorn", "prometheus_client", "tritonclient", "httpx")
if any(importlib.util.find_spec(m) is None for m in _NEEDED):
    pytest.skip("the serve extra is not installed (pip install -e '.[serve,dev]')", allow_module_level=True)

import httpx  # noqa: E402
import torch  # noqa: E402
import tritonclient.http as tc  # noqa: E402
import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from mobilenet.bench.harness import measured_batch_norm  # noqa: E402
from mobilenet.data import load_image  # noqa: E402
from mobilenet.deploy.backends import Runner, make_runner  # noqa: E402
from mobilenet.deploy.source import load_model, model_info  # noqa: E402
from mobilenet.errors import MobileNetError  # noqa: E402
from mobilenet.serve.app import ServeConfig, create_app, listen  # noqa: E402
from mobilenet.serve.load import scrape_batches  # noqa: E402
from mobilenet.serve.protocol import HEADER_LENGTH  # noqa: E402

NAME, RES, CLASSES = "tiny", 32, 5
LABELS = ["circle", "square", "star", "ring", "cross"]
# float32 round-off through 28 layers: oneDNN picks kernels by batch size, so one image alone and the same image in a
# batch of 16 differ by ~1e-4 on logits of ~10, up to 1.5e-4 on an AMX Xeon (a wrong row differs by ~1).
ROUND_OFF = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture(scope="module")
def runner():
    torch.manual_seed(0)
    model, _ = load_model("mobilenet_v1", alpha=0.25, resolution=RES, num_classes=CLASSES)
    # Batch-norm statistics of real activations, so logits are O(1) and differ between inputs: with the initial
    # statistics they are ~1e-14 and every comparison below would pass whatever rows came back.
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.5)
    measured_batch_norm(model, torch.randn(64, 3, RES, RES))
    runner = make_runner(model, "torch", model_info(model, LABELS))
    logits = runner(torch.randn(4, 3, RES, RES))
    assert logits.std(0).min() > 0.1, logits
    return runner


def _slow(runner, seconds: float) -> Runner:
    """The same model taking ``seconds`` longer per call, so that requests pile up while it runs."""
    def run(images):
        time.sleep(seconds)
        return runner(images)
    return Runner(runner.backend, runner.info, run, "slowed for the test")


class _Server:
    """The app on a free localhost port, served by uvicorn in a thread."""

    def __init__(self, runner, **config):
        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(runner, ServeConfig(name=NAME, **config))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started and time.monotonic() < end:
            time.sleep(0.01)
        assert self.server.started

    def close(self):
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="module")
def server(runner):
    s = _Server(runner, max_batch=8, max_body_mb=1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return tc.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=4)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, RES, RES), dtype=np.float32)


def _expected(runner, x) -> np.ndarray:
    return runner(torch.from_numpy(x)).numpy()


def _infer_json(url: str, x: np.ndarray, **extra) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            **extra}
    return httpx.post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=30)


def _logits(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def _png(path, seed: int, size=(45, 37), mode="RGB") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path.read_bytes()


def test_health_and_metadata(server, client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    assert {"classification", "binary_tensor_data"} <= set(client.get_server_metadata()["extensions"])
    meta = client.get_model_metadata(NAME)
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, RES, RES]}
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, CLASSES]}]
    assert meta["parameters"]["class_names"] == LABELS and meta["parameters"]["alpha"] == 0.25
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2/models/{NAME}/versions/1/ready").status_code == 200
    assert not client.is_model_ready("other")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_tensor(client, runner, binary):
    x = _images(3, seed=1)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(NAME, [inp], outputs=[tc.InferRequestedOutput("logits", binary_data=binary)],
                          request_id="abc")
    assert result.get_response()["id"] == "abc"
    np.testing.assert_allclose(result.as_numpy("logits"), _expected(runner, x), **ROUND_OFF)


def test_infer_tensor_plain_http(server, runner):
    x = _images(2, seed=2)
    np.testing.assert_allclose(_logits(_infer_json(server.url, x)), _expected(runner, x), **ROUND_OFF)


def test_infer_encoded_images_match_predict(server, client, runner, tmp_path):
    """PNG and JPEG files, RGB and grayscale, of any size: the server's answer is the one for the tensor
    `mobilenet predict` builds from the same file."""
    paths = [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"]
    blobs = [_png(paths[0], 3), _png(paths[1], 4, (80, 60)), _png(paths[2], 5, (20, 33), mode="L")]
    x = torch.stack([load_image(p, RES, runner.info.mean, runner.info.std, 3) for p in paths]).numpy()
    want = _expected(runner, x)
    inp = tc.InferInput("image", [3], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=np.object_))
    np.testing.assert_allclose(client.infer(NAME, [inp]).as_numpy("logits"), want, **ROUND_OFF)
    body = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES",
                        "data": [base64.b64encode(b).decode() for b in blobs]}]}
    resp = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json=body)
    np.testing.assert_allclose(_logits(resp), want, **ROUND_OFF)


def _parse_classes(values) -> list[list[tuple[float, int, str]]]:
    rows = [[(v.decode() if isinstance(v, bytes) else v).split(":") for v in row] for row in values]
    return [[(float(s), int(i), label) for s, i, label in row] for row in rows]


def test_classification_extension(server, client, runner):
    x = _images(2, seed=6)
    logits = _expected(runner, x)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(NAME, [inp], outputs=[tc.InferRequestedOutput("logits", class_count=3)]).as_numpy("logits")
    assert got.shape == (2, 3)
    for row, z in zip(_parse_classes(got), logits):
        order = np.argsort(-z)[:3]
        assert [i for _, i, _ in row] == list(order)
        assert [label for _, _, label in row] == [LABELS[i] for i in order]
        np.testing.assert_allclose([s for s, _, _ in row], z[order], rtol=1e-4, atol=1e-4)
    resp = _infer_json(server.url, x, parameters={"classification": 2})  # the request-level form (curl)
    out = resp.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    assert [i for _, i, _ in _parse_classes([out["data"][:2]])[0]] == list(np.argsort(-logits[0])[:2])


def test_batched_answers_equal_unbatched(runner):
    """Concurrent requests of 1-3 images, with undecodable images among them, on a model slow enough for queues to
    form: batches of several requests run, and every answer equals that request run alone."""
    s = _Server(_slow(runner, 0.03), max_batch=16, max_delay_ms=20)
    try:
        inputs = [_images(1 + i % 3, seed=100 + i) for i in range(24)]
        want = [_expected(runner, x) for x in inputs]
        bad = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [base64.b64encode(b"not an image").decode()]}]}

        def send(i):
            if i % 5 == 4:
                return httpx.post(f"{s.url}/v2/models/{NAME}/infer", json=bad, timeout=30).status_code
            return _logits(_infer_json(s.url, inputs[i]))

        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(send, range(len(inputs))))
        for i, (g, w) in enumerate(zip(got, want)):
            if i % 5 == 4:
                assert g == 400
            else:
                np.testing.assert_allclose(g, w, **ROUND_OFF)
        images, calls = scrape_batches(("127.0.0.1", s.port))
        good = [x for i, x in enumerate(inputs) if i % 5 != 4]
        assert images == sum(len(x) for x in good)
        assert calls <= len(good) / 2, f"{len(good)} requests in {calls:.0f} model calls: hardly batched"
    finally:
        s.close()


def test_litert_int8_serves_batches_with_each_requests_own_integers(runner):
    # One TensorFlow Lite interpreter per batch size, all called from the batcher's one thread: every answer is the
    # request run alone, bit for bit (integer arithmetic does not depend on the batch).
    pytest.importorskip("ai_edge_litert")
    lite = make_runner(runner.module, "litert-int8", runner.info, calib=torch.from_numpy(_images(32, seed=1)))
    s = _Server(_slow(lite, 0.02), max_batch=8, max_delay_ms=20)
    try:
        inputs = [_images(1 + i % 3, seed=200 + i) for i in range(12)]
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda x: _logits(_infer_json(s.url, x)), inputs))
        for g, x in zip(got, inputs):
            np.testing.assert_array_equal(g, _expected(lite, x))
    finally:
        s.close()


def test_lone_client_does_not_wait_for_the_delay(runner):
    s = _Server(runner, max_delay_ms=2000)
    try:
        x = _images(1, seed=7)
        for _ in range(3):
            start = time.perf_counter()
            np.testing.assert_allclose(_logits(_infer_json(s.url, x)), _expected(runner, x), **ROUND_OFF)
            assert time.perf_counter() - start < 1.0
    finally:
        s.close()


def _tensor(shape, datatype="FP32", data=None, name="input"):
    n = int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype, "data": [0.5] * n if data is None else data}


def _bin_request(size_field: int, raw: bytes, header_length: str | None = None):
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, RES, RES], "datatype": "FP32",
                                     "parameters": {"binary_data_size": size_field}}]}).encode()
    return {"content": header + raw, "headers": {HEADER_LENGTH: header_length or str(len(header))}}


_X = [1, 3, RES, RES]
BAD_REQUESTS = [
    ("malformed JSON", {"content": b'{"inputs": ['}, 400, "not valid JSON"),
    ("not UTF-8", {"content": b"\xff\xfe"}, 400, "not valid JSON"),
    ("JSON list", {"json": [1, 2]}, 400, "JSON object"),
    ("no inputs", {"json": {"outputs": []}}, 400, "exactly one input"),
    ("two inputs", {"json": {"inputs": [_tensor(_X), _tensor(_X)]}}, 400, "exactly one input"),
    ("unknown input", {"json": {"inputs": [_tensor(_X, name="pixels")]}}, 400, "unknown input"),
    ("wrong datatype", {"json": {"inputs": [_tensor(_X, "FP64")]}}, 400, "FP32"),
    ("INT8 data", {"json": {"inputs": [_tensor(_X, "INT8")]}}, 400, "FP32"),
    ("rank 3", {"json": {"inputs": [_tensor([3, RES, RES])]}}, 400, "has shape"),
    ("wrong side", {"json": {"inputs": [_tensor([1, 3, RES + 1, RES + 1])]}}, 400, "has shape"),
    ("one channel", {"json": {"inputs": [_tensor([1, 1, RES, RES])]}}, 400, "3-channel"),
    ("negative dim", {"json": {"inputs": [_tensor([-1, 3, RES, RES], data=[])]}}, 400, "non-negative"),
    ("empty batch", {"json": {"inputs": [_tensor([0, 3, RES, RES])]}}, 400, "empty"),
    ("too few values", {"json": {"inputs": [_tensor(_X, data=[0.5] * 10)]}}, 400, "needs"),
    ("strings as numbers", {"json": {"inputs": [_tensor(_X, data=["a"] * 3072)]}}, 400, "numbers"),
    ("ragged data", {"json": {"inputs": [_tensor(_X, data=[[1.0], [1.0, 2.0]])]}}, 400, "numbers"),
    ("over max batch", {"json": {"inputs": [_tensor([9, 3, RES, RES])]}}, 400, "at most 8"),
    ("undecodable image", {"json": {"inputs": [_tensor([1], "BYTES", [base64.b64encode(b"GIF89a...").decode()],
                                                       "image")]}}, 400, "cannot read image image[0]"),
    ("bad base64", {"json": {"inputs": [_tensor([1], "BYTES", ["%%%"], "image")]}}, 400, "base64"),
    ("image as FP32", {"json": {"inputs": [_tensor([1], "FP32", [1.0], "image")]}}, 400, "BYTES"),
    ("unknown output", {"json": {"inputs": [_tensor(_X)], "outputs": [{"name": "probs"}]}}, 400, "unknown output"),
    ("negative top-k", {"json": {"inputs": [_tensor(_X)], "parameters": {"classification": -1}}}, 400, "top-k"),
    ("binary size too big", _bin_request(99999, b"\0" * 12288), 400, "binary_data_size"),
    ("binary size too small", _bin_request(12, b"\0" * 12288), 400, "follow"),
    ("header length past body", _bin_request(12288, b"\0" * 12288, "999999"), 400, HEADER_LENGTH),
    ("oversized body", {"content": b" " * (2 * 2**20)}, 413, "limit"),
    ("oversized chunked body", {"content": iter([b" " * 2**19] * 4)}, 413, "limit"),
    ("unknown model", {"json": {"inputs": [_tensor(_X)]}, "model": "resnet50"}, 404, "unknown model"),
    ("unknown version", {"json": {"inputs": [_tensor(_X)]}, "model": f"{NAME}/versions/2"}, 404, "version 1"),
    ("GET infer", {"method": "GET"}, 405, "Method"),
]


@pytest.mark.parametrize("kwargs,status,words", [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_is_refused_and_the_server_keeps_answering(server, runner, kwargs, status, words):
    kwargs = dict(kwargs)
    method, model = kwargs.pop("method", "POST"), kwargs.pop("model", NAME)
    resp = httpx.request(method, f"{server.url}/v2/models/{model}/infer", timeout=30, **kwargs)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]
    x = _images(1, seed=8)
    np.testing.assert_allclose(_logits(_infer_json(server.url, x)), _expected(runner, x), **ROUND_OFF)


def test_tritonclient_sees_the_error_message(client):
    inp = tc.InferInput("input", [1, 1, RES, RES], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 1, RES, RES), np.float32))
    with pytest.raises(tc.InferenceServerException, match="3-channel"):
        client.infer(NAME, [inp])


def test_metrics(server):
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("mobilenet_requests_total", "mobilenet_request_latency_seconds_bucket", "mobilenet_batch_size_sum",
                 "mobilenet_queue_depth", "mobilenet_requests_in_flight"):
        assert name in text
    assert 'mobilenet_requests_total{endpoint="infer",status="200"}' in text


def test_full_queue_answers_503_with_retry_after(runner):
    s = _Server(_slow(runner, 0.15), max_batch=1, max_queue=2, max_delay_ms=0)
    try:
        x = _images(1, seed=9)
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: _infer_json(s.url, x), range(10)))
        codes = [r.status_code for r in answers]
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        full = next(r for r in answers if r.status_code == 503)
        assert full.headers["Retry-After"] == "1" and "queue is full" in full.json()["error"]
        for r in answers:
            if r.status_code == 200:
                np.testing.assert_allclose(_logits(r), _expected(runner, x), **ROUND_OFF)
        np.testing.assert_allclose(_logits(_infer_json(s.url, x)), _expected(runner, x), **ROUND_OFF)
    finally:
        s.close()


def test_a_taken_port_is_one_error():
    sock = listen("127.0.0.1", 0)
    try:
        with pytest.raises(MobileNetError, match="cannot listen"):
            listen("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


def test_cli_user_errors_are_one_line(capsys):
    from mobilenet.cli.main import main

    assert main(["serve", "--checkpoint", "/no/such/run", "--backend", "torch", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("mobilenet_requests_in_flight{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_drains_requests_in_flight_and_exits_0():
    """A real `mobilenet serve` process: SIGTERM while four requests are queued or running; all four are answered
    after the signal, then the process exits with status 0."""
    proc = subprocess.Popen([sys.executable, "-m", "mobilenet", "serve", "mobilenet_v1", "--resolution", "128",
                             "--num-classes", "10", "--backend", "torch", "--port", "0", "--max-batch", "16",
                             "--max-delay-ms", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline()
        assert " on http://" in line, proc.stderr.read()
        url = "http://" + line.split(" on http://")[1].strip()
        x = np.random.default_rng(0).standard_normal((16, 3, 128, 128), dtype=np.float32)
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_timed_infer, url, "mobilenet_v1", x) for _ in range(4)]
            end = time.monotonic() + 60
            while _in_flight(url) < 4 and time.monotonic() < end:
                time.sleep(0.002)
            signalled = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert proc.wait(60) == 0
        assert all(status == 200 and shape == [16, 10] for status, shape, _ in answers), answers
        assert max(done for _, _, done in answers) > signalled, "no request was still in flight at SIGTERM"
        assert "stopped after draining" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _timed_infer(url: str, model: str, x: np.ndarray):
    """A binary-tensor request (quick to send, so that all four are in the server together)."""
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    resp = httpx.post(f"{url}/v2/models/{model}/infer", content=header + raw, timeout=60,
                      headers={HEADER_LENGTH: str(len(header))})
    return resp.status_code, resp.json()["outputs"][0]["shape"], time.perf_counter()


@pytest.mark.slow
def test_bench_serve_runs_clean(capsys):
    from mobilenet.cli.main import main

    assert main(["bench-serve", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "5",
                 "--backend", "torch", "--concurrency", "1,4", "--requests", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["server_exit"] == 0
    assert [lv["concurrency"] for lv in out["levels"]] == [1, 4]
    assert all(lv["failures"] == 0 and lv["ok"] == 40 for lv in out["levels"])
