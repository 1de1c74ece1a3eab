"""``--backend auto``: the choice rule, a real choice against torch, the per-machine cache, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mobilenet.deploy import auto
from mobilenet.deploy.auto import pick
from mobilenet.errors import MobileNetError
from mobilenet.models import create_model

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "auto.json"))
    return tmp_path / "auto.json"


def test_pick_fastest_within_the_top1_budget():
    seconds = {"torch": 3.0, "onnxruntime": 2.0, "onnxruntime-int8": 1.0, "openvino-bf16": 1.5}
    assert pick(seconds, {"onnxruntime-int8": 0.2, "openvino-bf16": 0.1}, 0.5) == "onnxruntime-int8"
    assert pick(seconds, {"onnxruntime-int8": 0.8, "openvino-bf16": 0.1}, 0.5) == "openvino-bf16"
    # reduced precision with no measured delta never wins, however fast; float backends need no delta
    assert pick(seconds, {}, 0.5) == "onnxruntime"
    with pytest.raises(MobileNetError, match="top-1 budget"):
        pick({"torch-bf16": 1.0}, {"torch-bf16": 2.0}, 0.5)


def test_auto_picks_a_faster_backend_than_torch_and_caches_it(private_cache, monkeypatch):
    # A tiny model at batch 1 is all per-op overhead in eager PyTorch; ONNX Runtime runs the graph in C++ and is
    # several times faster on any CPU, so the choice is not a coin toss on a noisy machine.
    from mobilenet.deploy import make_runner

    model = create_model("mobilenet_v3_small", alpha=0.25, resolution=32).eval()
    runner = auto.auto_runner(model, _info(model), candidates=("torch", "onnxruntime"))
    assert runner.backend == "onnxruntime" and "timed now" in runner.note
    assert runner.auto["seconds"]["onnxruntime"] < runner.auto["seconds"]["torch"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-4)
    stored = json.loads(private_cache.read_text())
    assert [d["backend"] for d in stored.values()] == ["onnxruntime"]

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached choice must not be timed again")

    monkeypatch.setattr(auto, "decide", no_timing)
    again = make_runner(model, "auto")
    assert again.backend == "onnxruntime" and "cached" in again.note


def test_without_validation_images_only_float_backends_compete(monkeypatch):
    seen = []

    def fake_make_runner(model, backend, info=None, **kw):
        seen.append(backend)
        return real(model, "torch", info)

    from mobilenet.deploy import backends

    real = backends.make_runner
    monkeypatch.setattr(backends, "make_runner", fake_make_runner)
    model = create_model("mobilenet_v1", alpha=0.25, resolution=32).eval()
    auto.decide(model, _info(model), 1, None, 0.5, None, 1, False)
    assert seen and not set(seen) & set(backends.REDUCED)


def test_cli_export_auto_records_the_choice(tmp_path, capsys):
    import onnx

    from mobilenet.cli.main import main

    out = tmp_path / "m.onnx"
    assert main(["export", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--num-classes", "5",
                 "--backend", "auto", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["mobilenet.backend"] in ("onnxruntime", "openvino") and "backend auto" in text


def _info(model):
    from mobilenet.deploy import model_info

    return model_info(model)
