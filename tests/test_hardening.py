"""Hardening: no loader runs code from a file, and training survives kill -9, a full disk, damaged checkpoints and
a second run in the same directory."""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mobilenet.checkpoint import FORMAT, previous_path, read_checkpoint, read_for_resume
from mobilenet.cli.main import main
from mobilenet.errors import MobileNetError
from mobilenet.runlock import RunLock
from mobilenet.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("FAULT_KILLS", "3"))  # the slow test and `make fuzz` run the full 20


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------------------------------------
# Planted pickles: every loader of files refuses them before any code runs.

class _Planted:
    """Unpickled by a plain unpickler, this creates ``path`` (``builtins.open(path, "w")``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(path: Path, probe: Path, writer: str) -> Path:
    """Writes a file whose loading with a plain unpickler would create ``probe``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "torch.save":  # the zip format every PyTorch loader reads, shaped like the expected contents
        torch.save({"format": FORMAT, "model": {"w": _Planted(probe)}, "state_dict": _Planted(probe)}, path)
    else:  # a bare pickle: CIFAR's format, and PyTorch's legacy one
        with open(path, "wb") as f:
            pickle.dump({b"data": _Planted(probe), b"labels": [0], b"label_names": [b"a"]}, f, protocol=2)
    return path


def _cifar(tmp, probe, writer):
    root = tmp / "cifar"
    for name in ("batches.meta", "data_batch_1", "test_batch"):
        _plant(root / name, probe, writer)
    from mobilenet.data import load_data
    load_data(str(root), data_format="cifar", resolution=32)


def _resume(tmp, probe, writer):
    _plant(tmp / "run" / "last.pt", probe, writer)
    train(TrainConfig(output=str(tmp / "run"), resume="auto", progress=False))


def _resume_cli(tmp, probe, writer):
    _plant(tmp / "run" / "last.pt", probe, writer)
    assert main(["train", "--resume", str(tmp / "run" / "last.pt"), "--no-progress"]) == 2
    raise MobileNetError("exit 2")


def _eval_cli(tmp, probe, writer):
    _plant(tmp / "best.pt", probe, writer)
    assert main(["eval", "--checkpoint", str(tmp / "best.pt")]) == 2
    raise MobileNetError("exit 2")


def _deploy_checkpoint(tmp, probe, writer):
    from mobilenet.deploy import load_model
    load_model(checkpoint=str(_plant(tmp / "best.pt", probe, writer)))


def _weights_option(tmp, probe, writer):
    from mobilenet.deploy import load_model
    load_model("mobilenet_v1", weights=str(_plant(tmp / "w.pth", probe, writer)), alpha=0.25)


def _create_model(tmp, probe, writer):
    from mobilenet.models import create_model
    create_model("mobilenet_v2", weights=_plant(tmp / "w.pt", probe, writer))


def _convert(library, name):
    def load(tmp, probe, writer):
        from mobilenet.convert import convert
        convert(_plant(tmp / "theirs.pth", probe, writer), library, name, tmp / "out.safetensors")
    return load


def _keras(tmp, probe, writer):
    from mobilenet.convert import convert
    convert(_plant(tmp / "theirs.h5", probe, writer), "keras", "MobileNet", tmp / "out.safetensors")


def _onnx(tmp, probe, writer):
    from mobilenet.deploy import read_info
    read_info(str(_plant(tmp / "m.onnx", probe, writer)))


def _idx(tmp, probe, writer):
    from mobilenet.data.idx import read_idx_file
    read_idx_file(_plant(tmp / "train-images-idx3-ubyte", probe, writer))


def _image(tmp, probe, writer):
    from mobilenet.data import load_image
    load_image(_plant(tmp / "cat.jpg", probe, writer), 32)


LOADERS = {
    "cifar-batch": _cifar, "train-resume": _resume, "cli-train-resume": _resume_cli, "cli-eval": _eval_cli,
    "deploy-checkpoint": _deploy_checkpoint, "weights-option": _weights_option, "create_model-weights": _create_model,
    "convert-torchvision": _convert("torchvision", "mobilenet_v2"),
    "convert-timm": _convert("timm", "mobilenetv3_large_100"), "convert-keras": _keras, "onnx-metadata": _onnx,
    "idx": _idx, "image": _image,
}


def test_planted_pickles_do_run_code_under_a_plain_unpickler(tmp_path):
    # Without this control the tests below could pass with a payload that does nothing.
    for writer in ("pickle", "torch.save"):
        probe = tmp_path / f"ran-{writer}"
        path = _plant(tmp_path / writer, probe, writer)
        if writer == "pickle":
            pickle.loads(path.read_bytes())
        else:
            torch.load(path, weights_only=False)
        assert probe.exists()


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_loader_refuses_a_planted_pickle_without_running_it(loader, writer, tmp_path, capsys):
    probe = tmp_path / "code-ran"
    with pytest.raises(MobileNetError):
        LOADERS[loader](tmp_path, probe, writer)
    assert not probe.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# Training faults.

def _config(out: Path, **kw) -> TrainConfig:
    kw = {"model": "mobilenet_v1", "alpha": 0.25, "resolution": 32, "data": "shapes", "limit": 64,
          "batch_size": 16, "epochs": 2, "checkpoint_every": 1, "progress": False, "output": str(out), **kw}
    return TrainConfig(**kw)


def _same_weights(a: Path, b: Path) -> bool:
    x, y = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one_and_stops_clearly(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_config(out, max_steps=2))
    before = (out / "last.pt").read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def write(self, data):
            self.f.write(bytes(data[:1000]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(MobileNetError, match="could not write checkpoint .*No space left on device.*unchanged"):
        train(_config(out, resume="auto", max_steps=3))
    monkeypatch.undo()
    assert (out / "last.pt").read_bytes() == before
    assert read_checkpoint(out / "last.pt")["step"] == 2
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()  # no debris, the lock released
    train(_config(out, resume="auto", max_steps=3))  # space again: the run goes on
    assert read_checkpoint(out / "last.pt")["step"] == 3


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_checkpoint_is_detected_and_the_previous_one_resumes_exactly(tmp_path, damage, caplog):
    reference = train(_config(tmp_path / "ref", max_steps=4))["last"]
    out = tmp_path / "run"
    train(_config(out, max_steps=3))
    last = out / "last.pt"
    assert read_checkpoint(previous_path(last))["step"] == 2
    data = bytearray(last.read_bytes())
    if damage == "flip":  # one bit in the middle of the tensor data: the archive itself still opens
        data[len(data) // 2] ^= 0x10
        torch.load(io.BytesIO(bytes(data)), weights_only=True)
    else:
        del data[len(data) * 2 // 3:]
    last.write_bytes(bytes(data))
    with pytest.raises(MobileNetError, match="corrupted" if damage == "flip" else "truncated"):
        read_checkpoint(last)
    with caplog.at_level(logging.WARNING, logger="mobilenet.checkpoint"):
        result = train(_config(out, resume="auto", max_steps=4))
    assert "resuming from the previous checkpoint" in caplog.text and "step 2" in caplog.text
    assert result["steps"] == 4 and _same_weights(Path(result["last"]), Path(reference))
    # The damaged file was never kept as the fallback: both files are good now.
    assert read_checkpoint(previous_path(last))["step"] == 3


def test_both_checkpoints_damaged_is_one_clear_error(tmp_path):
    out = tmp_path / "run"
    train(_config(out, max_steps=2))
    for path in (out / "last.pt", out / "last.prev.pt"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MobileNetError, match="previous checkpoint cannot be used either"):
        read_for_resume(out / "last.pt")


LOCK_HOLDER = r"""
import sys, time
from mobilenet.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_run_in_the_same_directory_refuses_and_a_dead_owner_lock_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MobileNetError, match=rf"in use by another training run \(process {holder.pid}"):
            train(_config(out, max_steps=1))
        assert not (out / "last.pt").exists() and not (out / "config.json").exists()  # nothing written
        assert main(["train", "--output", str(out), "--resume", "--no-progress"]) == 2
    finally:
        holder.kill()  # kill -9: the owner cannot clean up
        holder.wait(timeout=30)
    assert (out / ".lock").read_text().split()[0] == str(holder.pid)  # the dead owner's lock is still there
    with caplog.at_level(logging.WARNING, logger="mobilenet.train"):
        assert train(_config(out, max_steps=1))["steps"] == 1
    assert f"from process {holder.pid}, which is no longer running" in caplog.text
    with RunLock(out), pytest.raises(MobileNetError, match="in use"):  # the same process, a second run
        train(_config(out, resume="auto", max_steps=2))


def test_resume_of_a_run_killed_before_it_created_its_directory_starts_it_there(tmp_path, capsys):
    out = tmp_path / "never-created"
    assert main(_cli_args(out, True) + ["--max-steps", "1"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 1 and not (tmp_path / "last.pt").exists()
    assert "starting the run from the beginning" in capsys.readouterr().err


def _cli_args(out: Path, resume: bool) -> list[str]:
    args = ["train", "--model", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--data", "shapes",
            "--limit", "64", "--batch-size", "16", "--epochs", "2", "--checkpoint-every", "1", "--no-progress",
            "--output", str(out)]
    return args + (["--resume"] if resume else [])


STEPS = 8  # of the run _cli_args describes: 64 samples / batch 16 x 2 epochs


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait(proc: subprocess.Popen, until, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while proc.poll() is None and time.perf_counter() < deadline and not until():
        time.sleep(0.005)


def kill_loop(tmp_path: Path, kills: int, seed: int = 0) -> dict:
    """Runs the training CLI and kills it with SIGKILL at a random moment of its life, ``kills`` times, each next
    run being the same command with ``--resume``; a run that finishes before its kill is compared with the
    uninterrupted one and the loop goes on in a fresh directory. A last ``--resume`` then finishes the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "mobilenet"]
    reference = tmp_path / "reference"
    started = time.perf_counter()
    done = subprocess.run(command + _cli_args(reference, False), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    whole = time.perf_counter() - started
    rng, runs, survived, finished, steps_at_kill = random.Random(seed), 0, 0, 0, []
    out, fresh = tmp_path / f"killed-{runs}", True
    while survived < kills and runs < 3 * kills:
        runs += 1
        proc = subprocess.Popen(command + _cli_args(out, not fresh), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        done_steps = 0 if fresh or not steps_at_kill or steps_at_kill[-1] is None else steps_at_kill[-1]
        if rng.random() < 0.25 or done_steps >= STEPS - 1:  # any moment of the process's life, start-up included
            _wait(proc, lambda: False, rng.uniform(0.05, 1.0) * whole)
        else:  # just after checkpoint k begins (its step is logged first), then 0-50 ms on: in a write or a step
            k = rng.randint(done_steps + 1, STEPS - 1)
            _wait(proc, lambda log=out / "steps.jsonl", k=k: _lines(log) >= k, 2 * whole)
            time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        err = proc.stderr.read()
        assert proc.returncode in (0, -9), err  # killed by us, or finished: never a failure
        assert "Traceback" not in err
        if proc.returncode == 0:  # it finished first: it must have finished exactly
            assert _same_weights(out / "last.pt", reference / "last.pt")
            finished += 1
            out, fresh = tmp_path / f"killed-{runs}", True
            continue
        ckpt, _ = read_for_resume(out / "last.pt", missing_ok=True)  # what the next --resume will read
        steps_at_kill.append(None if ckpt is None else ckpt["step"])
        survived, fresh = survived + 1, False
    done = subprocess.run(command + _cli_args(out, not fresh), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"survived": survived, "finished_before_kill": finished, "steps_at_kill": steps_at_kill,
            "reference": reference / "last.pt", "final": out / "last.pt"}


def test_kill_9_at_random_moments_then_resume_ends_with_the_uninterrupted_model(tmp_path):
    found = kill_loop(tmp_path, KILLS)
    assert found["survived"] == KILLS
    assert read_checkpoint(found["final"])["step"] == read_checkpoint(found["reference"])["step"] == 8
    assert _same_weights(found["final"], found["reference"])
    print(f"kill -9 survived: {found['survived']}, checkpoint step after each kill: {found['steps_at_kill']}")


@pytest.mark.slow
def test_twenty_kills(tmp_path):
    found = kill_loop(tmp_path, 20, seed=1)
    assert found["survived"] == 20 and _same_weights(found["final"], found["reference"])
    print(f"kill -9 survived: {found['survived']}, checkpoint step after each kill: {found['steps_at_kill']}")
