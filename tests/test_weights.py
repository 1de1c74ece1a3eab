"""Safe weight loading: metadata options applied, checksums, URL cache, offline errors, malicious pickles."""

from __future__ import annotations

import functools
import http.server
import pickle
import socket
import threading
from functools import partial

import pytest
import torch
from torch import nn

from mobilenet import create_model
from mobilenet.download import fetch, file_sha256
from mobilenet.errors import MobileNetError
from mobilenet.layers import SamePad2d
from mobilenet.weights import load_weights, save_weights

TINY = dict(alpha=0.25, resolution=64, num_classes=7)


def _randomised(model: nn.Module) -> nn.Module:
    # Non-trivial BN statistics, so that a wrong eps or a dropped buffer changes the outputs.
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.01 + 1e-4)
    return model.eval()


@pytest.fixture()
def tf_style(tmp_path):
    """A V1 with Keras' options, saved with those options in its metadata."""
    model = _randomised(create_model("mobilenet_v1", padding="same", act_layer=nn.ReLU6,
                                     norm_layer=partial(nn.BatchNorm2d, eps=1e-3), **TINY))
    path = tmp_path / "v1.safetensors"
    info = {"model": "mobilenet_v1",
            "options": {**TINY, "padding": "same", "bn_eps": 1e-3, "act": "relu6"},
            "preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    save_weights(path, model.state_dict(), info)
    return model, path


def test_recorded_options_are_applied(tf_style):
    model, path = tf_style
    loaded = create_model("mobilenet_v1", weights=path)
    assert loaded.num_classes == 7 and loaded.alpha == 0.25
    assert any(isinstance(m, SamePad2d) for m in loaded.modules())
    assert {m.eps for m in loaded.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert any(isinstance(m, nn.ReLU6) for m in loaded.modules())
    assert loaded.preprocessing == {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert loaded.resolution == 64 and create_model("mobilenet_v1", weights=path, rho=0.5).resolution == 112
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
        # The same weights without the recorded options compute something else: the options matter.
        plain = create_model("mobilenet_v1", **TINY).eval()
        plain.load_state_dict(model.state_dict())
        assert (plain(x) - model(x)).abs().max() > 1e-3


def test_sha256_checked(tf_style):
    _, path = tf_style
    create_model("mobilenet_v1", weights=path, weights_sha256=file_sha256(path).upper())
    with pytest.raises(MobileNetError, match="SHA-256 mismatch"):
        create_model("mobilenet_v1", weights=path, weights_sha256="0" * 64)
    with pytest.raises(MobileNetError, match="64 hex digits"):
        create_model("mobilenet_v1", weights=path, weights_sha256="abc")


def test_wrong_model_and_shapes_are_one_clear_error(tf_style, tmp_path):
    _, path = tf_style
    with pytest.raises(MobileNetError, match="for mobilenet_v1, not mobilenet_v2"):
        create_model("mobilenet_v2", weights=path)
    bare = tmp_path / "bare.pt"
    torch.save(create_model("mobilenet_v1", alpha=0.5).state_dict(), bare)
    wrong_shape = r"shape mismatches: features\.0\.conv\.weight: weights \[16, 3, 3, 3\] vs model \[8, 3, 3, 3\]"
    with pytest.raises(MobileNetError, match=wrong_shape):
        create_model("mobilenet_v1", weights=bare, alpha=0.25)


def test_plain_and_training_checkpoints_load(tmp_path):
    model = _randomised(create_model("mobilenet_v2", **TINY))
    x = torch.randn(1, 3, 64, 64)
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, plain)
    with torch.no_grad():
        assert torch.equal(create_model("mobilenet_v2", weights=plain, **TINY).eval()(x), model(x))
    ckpt = tmp_path / "train.pt"
    torch.save({"format": "mobilenet-checkpoint", "model": model.state_dict(), "model_kwargs": TINY,
                "config": {"model": "mobilenet_v2"}, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}, ckpt)
    loaded = create_model("mobilenet_v2", weights=ckpt)
    assert loaded.num_classes == 7 and loaded.preprocessing["mean"] == (0.1, 0.2, 0.3)


class _CreatesFile:
    """Unpickling this object opens (creates) a file: code running at load time."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_refused_and_not_run(tmp_path, writer):
    evil = tmp_path / "evil.pth"
    victim = tmp_path / "pwned.txt"
    payload = {"features.0.conv.weight": torch.zeros(1), "x": _CreatesFile(victim)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(MobileNetError, match="refused"):
        create_model("mobilenet_v1", weights=evil)
    assert not victim.exists()
    with pytest.raises(MobileNetError, match="refused"):
        load_weights(evil)
    assert not victim.exists()
    # Control: a plain unpickler runs such an object (so the assertions above can fail).
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_CreatesFile(control))).close()
    assert control.exists()


def test_garbage_and_keras_files_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MobileNetError, match="not a readable"):
        create_model("mobilenet_v1", weights=junk)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(MobileNetError, match="--from keras"):
        create_model("mobilenet_v1", weights=h5)
    with pytest.raises(MobileNetError, match="not found"):
        create_model("mobilenet_v1", weights=tmp_path / "missing.safetensors")


@pytest.fixture()
def http_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_download_cache_and_checksum(tf_style, http_server, tmp_path, monkeypatch):
    model, path = tf_style
    root, base = http_server
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    (root / "v1.safetensors").write_bytes(path.read_bytes())
    digest = file_sha256(path)
    url = f"{base}/v1.safetensors"
    loaded = create_model("mobilenet_v1", weights=url, weights_sha256=digest)
    cached = fetch(url, digest, progress=False)
    assert cached.is_relative_to(tmp_path / "cache") and file_sha256(cached) == digest
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))
    # Served file gone: the verified cache copy is used without the network.
    (root / "v1.safetensors").unlink()
    assert fetch(url, digest, progress=False) == cached
    # A tampered download is rejected and never enters the cache.
    (root / "bad.safetensors").write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MobileNetError, match="SHA-256 mismatch"):
        fetch(f"{base}/bad.safetensors", digest, progress=False)
    assert not list((tmp_path / "cache").rglob("bad.safetensors"))
    # file:// URLs go through the same path.
    assert file_sha256(fetch(path.as_uri(), digest, progress=False)) == digest


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MobileNetError, match="could not download .*offline"):
        create_model("mobilenet_v1", weights=f"http://127.0.0.1:{port}/w.safetensors", weights_sha256="0" * 64)
