"""Checkpoints: atomic writes (even under kill -9), safe loading, and clear errors for a wrong model."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mobilenet.checkpoint import FORMAT, read_checkpoint, rng_state, save_atomic, set_rng_state
from mobilenet.errors import MobileNetError
from mobilenet.models import create_model
from mobilenet.statedict import load_strict
from mobilenet.train import TrainConfig, evaluate, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]

# A training process whose third checkpoint write stops half-way through the bytes (after making them durable)
# and waits there to be killed. Data and config match tiny_run() below.
CHILD = r"""
import os, sys, time, types
import torch
torch.set_num_threads(1)
from torch.utils.data import TensorDataset
from mobilenet.train import TrainConfig, train

out, marker = sys.argv[1], sys.argv[2]
real_fdopen, calls = os.fdopen, [0]

class HalfWrite:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def write(self, data):
        self.f.write(bytes(data[: len(data) // 2]))
        self.f.flush()
        os.fsync(self.f.fileno())
        open(marker, "w").close()
        time.sleep(600)

def fdopen(fd, *args, **kwargs):
    calls[0] += 1
    f = real_fdopen(fd, *args, **kwargs)
    return HalfWrite(f) if calls[0] == 3 else f

os.fdopen = fdopen
g = torch.Generator().manual_seed(0)
x, y = torch.randn(64, 3, 32, 32, generator=g), torch.arange(64) % 4
data = types.SimpleNamespace(train=TensorDataset(x, y), val=TensorDataset(x[:16], y[:16]), test=None,
                             class_names=list("abcd"), mean=(0.0,) * 3, std=(1.0,) * 3, in_chans=3)
train(TrainConfig(model="mobilenet_v1", alpha=0.25, resolution=32, batch_size=16, epochs=3, checkpoint_every=1,
                  progress=False, output=out), data)
"""


def tiny_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.arange(64) % 4
    return types.SimpleNamespace(train=TensorDataset(x, y), val=TensorDataset(x[:16], y[:16]), test=None,
                                 class_names=list("abcd"), mean=(0.0,) * 3, std=(1.0,) * 3, in_chans=3)


def tiny_config(out: Path, **kw) -> TrainConfig:
    kw = {"model": "mobilenet_v1", "alpha": 0.25, "resolution": 32, "batch_size": 16, "epochs": 3,
          "checkpoint_every": 1, "progress": False, "output": str(out), **kw}
    return TrainConfig(**kw)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_save_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic({"format": FORMAT, "model": {"w": torch.ones(2)}}, path)
    save_atomic({"format": FORMAT, "model": {"w": torch.full((2,), 7.0)}}, path)
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((2,), 7.0))
    assert os.listdir(tmp_path) == ["c.pt"]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic({"format": FORMAT, "model": {"w": torch.ones(2)}}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on where the lambda lives
        save_atomic({"format": FORMAT, "model": {"w": lambda: 0}}, path)  # cannot be pickled
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["c.pt"]


def test_kill_9_in_the_middle_of_a_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "stalled"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(marker)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "child never reached the write"
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait(timeout=30)
    partial = list(out.glob(".last.pt.*.tmp"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < (out / "last.pt").stat().st_size
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2  # the checkpoint before the interrupted write, whole
    model, _ = load_checkpoint(out / "last.pt")
    assert evaluate(model, tiny_data().val)["count"] == 16
    resumed = train(tiny_config(out, resume="auto", max_steps=3), tiny_data())
    assert resumed["steps"] == 3 and read_checkpoint(out / "last.pt")["step"] == 3


def test_read_checkpoint_rejects_missing_truncated_foreign_and_malicious_files(tmp_path):
    with pytest.raises(MobileNetError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")
    good = save_atomic({"format": FORMAT, "model": {"w": torch.ones(1000)}}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(MobileNetError, match="truncated"):
        read_checkpoint(truncated)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(MobileNetError, match="not a mobilenet training checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    ran = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {ran}",))

    torch.save({"format": FORMAT, "model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(MobileNetError, match="not plain data"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not ran.exists()


def test_loading_into_the_wrong_architecture_lists_every_mismatch(tmp_path):
    train(tiny_config(tmp_path / "run", epochs=1), tiny_data())
    wider = create_model("mobilenet_v1", alpha=0.5, resolution=32, num_classes=4)
    with pytest.raises(MobileNetError) as err:
        load_checkpoint(tmp_path / "run", model=wider)
    message = str(err.value)
    assert "\n" not in message
    own = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4).state_dict()
    mismatched = [k for k, v in wider.state_dict().items() if v.shape != own[k].shape]
    assert f"{len(mismatched)} shape mismatches" in message
    assert "features.0.conv.weight: checkpoint [8, 3, 3, 3] vs model [16, 3, 3, 3]" in message
    with pytest.raises(MobileNetError, match=r"missing in the checkpoint: .*not in the model"):
        load_checkpoint(tmp_path / "run", model=create_model("mobilenet_v2", alpha=0.25, num_classes=4))
    fits = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4)
    load_checkpoint(tmp_path / "run", model=fits)  # the right one loads


def test_load_state_names_a_missing_key():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(MobileNetError, match="1 missing in the checkpoint: bias"):
        load_strict(model, {"weight": torch.zeros(2, 3)})


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    save_atomic({"format": FORMAT, "model": {}, "rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    set_rng_state(read_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_version_1_checkpoints_resume_exactly(tmp_path):
    # Version 1 also stored the LambdaLR scheduler's state; version 2 recomputes the rate from the step. A run
    # stopped mid-epoch resumes to the same weights from either file.
    from mobilenet.runstate import FIELDS, VERSION

    train(tiny_config(tmp_path / "a", max_steps=5, ema=0.9), tiny_data())
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpt = read_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["version"] == VERSION == 2 and tuple(ckpt) == FIELDS
    old = dict(ckpt, version=1, scheduler={"base_lrs": [0.1], "last_epoch": ckpt["step"], "_step_count": 6})
    save_atomic(old, tmp_path / "b" / "last.pt")
    for run in ("a", "b"):
        train(tiny_config(tmp_path / run, ema=0.9, resume="auto"), tiny_data())
    a, b = (read_checkpoint(tmp_path / run / "last.pt") for run in ("a", "b"))
    assert a["step"] == b["step"] == 12 and b["version"] == VERSION and "scheduler" not in b
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
