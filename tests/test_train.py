"""Training loop: learning, exact resume, NaN stop, Ctrl-C, DDP gradient equivalence, eval and predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from mobilenet.checkpoint import read_checkpoint
from mobilenet.cli.main import main as cli
from mobilenet.data.patterns import CLASS_NAMES as PATTERNS
from mobilenet.distributed import launch_local
from mobilenet.errors import MobileNetError
from mobilenet.layers import is_depthwise
from mobilenet.models import create_model
from mobilenet.optim import LRFactor, make_optimizer, param_groups
from mobilenet.resumable import ResumableSampler
from mobilenet.train import TrainConfig, evaluate, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model="mobilenet_v1", alpha=0.25, resolution=32, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def blobs(n: int, classes: int = 4, seed: int = 0) -> TensorDataset:
    """A learnable toy task: each class brightens its own quadrant of its own channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = 0.5 * torch.randn(n, 3, 32, 32, generator=g)
    for c in range(classes):
        r, q = divmod(c, 2)
        x[y == c, c % 3, r * 16:(r + 1) * 16, q * 16:(q + 1) * 16] += 1.5
    return TensorDataset(x, y)


class Jitter(Dataset):
    """Random noise on every access, like an augmentation: draws from the global torch generator."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x + 0.1 * torch.randn_like(x), y


class PoisonAfter(Dataset):
    """Returns a NaN image from the ``after``-th access on."""

    def __init__(self, base: Dataset, after: int):
        self.base, self.after, self.calls = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        x, y = self.base[i]
        return (torch.full_like(x, float("nan")) if self.calls > self.after else x), y


def bundle(train_set: Dataset, val_set: Dataset | None = None, classes: int = 4):
    return types.SimpleNamespace(train=train_set, val=val_set if val_set is not None else blobs(32, classes, 1),
                                 test=None, class_names=[f"c{i}" for i in range(classes)], mean=(0.0, 0.0, 0.0),
                                 std=(1.0, 1.0, 1.0), in_chans=3)


def step_losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optimizer, lr", [("rmsprop", 0.002), ("adamw", 0.002), ("lars", 0.02)])
def test_a_few_steps_on_the_embedded_dataset_lower_the_loss(tmp_path, optimizer, lr):
    cfg = TrainConfig(**TINY, data="shapes", limit=48, batch_size=48, epochs=16, optimizer=optimizer, lr=lr,
                      augment="none", schedule="constant", warmup_epochs=0, label_smoothing=0.0,
                      output=str(tmp_path / "run"))
    result = train(cfg)
    losses = step_losses(tmp_path / "run")
    assert len(losses) == 16 and result["steps"] == 16
    assert losses[0] == pytest.approx(torch.log(torch.tensor(12.0)).item(), abs=0.3)  # 12 classes, near uniform
    assert sum(losses[-3:]) / 3 < 0.85 * losses[0]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "run" / "config.json").read_text())["class_names"][0] == "circle"


def resume_config(out: Path, **kw) -> TrainConfig:
    # dropout and the jittered data exercise every random stream that a resume has to continue exactly
    return TrainConfig(**{**TINY, "dropout": 0.3, "epochs": 3, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0.5,
                          "output": str(out), **kw})


def test_resume_continues_exactly(tmp_path):
    data = bundle(Jitter(blobs(64)))
    full = train(resume_config(tmp_path / "full"), data)
    assert full["steps"] == 12 and len(full["history"]) == 3
    # stop mid-epoch 2 (after step 6 of 12), then resume from the saved last.pt
    part = train(resume_config(tmp_path / "part", max_steps=6, checkpoint_every=4), data)
    assert part["steps"] == 6 and part["epochs_done"] == 1
    assert read_checkpoint(tmp_path / "part" / "last.pt")["seen"] == 32
    resumed = train(resume_config(tmp_path / "part", resume="auto"), data)
    assert resumed["steps"] == 12
    assert step_losses(tmp_path / "part") == step_losses(tmp_path / "full")  # exact, not approximately
    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(tmp_path / "part" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert resumed["history"] == [{**h, "seconds": r["seconds"], "images_per_s": r["images_per_s"]}
                                  for h, r in zip(full["history"], resumed["history"])]


def test_resume_refuses_changed_options_and_a_fresh_run_refuses_an_old_directory(tmp_path):
    data = bundle(blobs(32))
    train(resume_config(tmp_path / "r", epochs=1), data)
    with pytest.raises(MobileNetError, match="lr: checkpoint 0.05, now 0.1"):
        train(resume_config(tmp_path / "r", epochs=2, lr=0.1, resume="auto"), data)
    with pytest.raises(MobileNetError, match="already holds a run"):
        train(resume_config(tmp_path / "r"), data)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    # 16 samples per step: the 49th sample loaded is in step 4; checkpoints every 2 steps
    data = bundle(PoisonAfter(blobs(64), after=48))
    with pytest.raises(MobileNetError, match=r"loss became nan at step 4 \(epoch 1, batch 4\).*step 2\)"):
        train(resume_config(tmp_path / "r", checkpoint_every=2, dropout=0.0), data)
    ckpt = read_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    model, _ = load_checkpoint(tmp_path / "r" / "last.pt")
    assert evaluate(model, blobs(16))["count"] == 16


def test_ctrl_c_saves_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mobilenet", "train", "--model", "mobilenet_v1", "--alpha", "0.25", "--resolution",
           "32", "--limit", "96", "--batch-size", "8", "--epochs", "5", "--no-progress", "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        steps = out / "steps.jsonl"
        if steps.exists() and steps.read_text().count("\n") >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stdout and "--resume" in stdout
    ckpt = read_checkpoint(out / "last.pt")
    assert 2 <= ckpt["step"] < 5 * 12 and ckpt["step"] == len(step_losses(out))


def test_weight_decay_skips_depthwise_filters_norms_and_biases():
    model = create_model("mobilenet_v1", alpha=0.25, num_classes=10)
    decayed, exempt = (g["params"] for g in param_groups(model, 4e-5))
    expected = {id(m.weight) for m in model.modules()
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not is_depthwise(m)}
    assert {id(p) for p in decayed} == expected
    assert len(decayed) == 1 + 13 + 1  # stem, 13 pointwise convs, classifier (V1 Table 1)
    assert len(decayed) + len(exempt) == len(list(model.parameters()))
    assert len(param_groups(model, 4e-5, decay_all=True)) == 1


def test_lars_moves_every_tensor_by_the_same_fraction_of_its_size():
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", alpha=0.25, num_classes=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, "lars", lr=0.01, momentum=0.0, weight_decay=0.0)
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    raw = {n: (torch.linalg.vector_norm(p.grad) / torch.linalg.vector_norm(p)).item()
           for n, p in model.named_parameters() if p.ndim > 1}
    opt.step()
    steps = {n: (torch.linalg.vector_norm(p.detach() - before[n]) / torch.linalg.vector_norm(before[n])).item()
             for n, p in model.named_parameters() if p.ndim > 1}
    # Plain SGD's relative steps would spread as widely as |g| / |w| does (a factor of 10 or more here); LARS's
    # are all the rate itself.
    assert max(raw.values()) / min(raw.values()) > 10
    assert steps.keys() == raw.keys() and all(abs(v - 0.01) < 1e-5 for v in steps.values())
    # A zero tensor (a BN shift at initialisation) takes a plain SGD step instead of staying at zero.
    shifts = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.count_nonzero(b) for b in shifts)


def test_learning_rate_schedule_warms_up_then_decays():
    cosine = LRFactor(total_steps=100, warmup_steps=10, schedule="cosine")
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0, abs=1e-12)
    step = LRFactor(total_steps=100, warmup_steps=0, schedule="step", step_every=30, gamma=0.1)
    assert [step(s) for s in (0, 29, 30, 60)] == pytest.approx([1, 1, 0.1, 0.01])


def _paired_data(seed: int) -> types.SimpleNamespace:
    """8 samples whose two DDP shards hold the same images (with different labels), so batch norm sees the same
    statistics on each shard as on the combined batch and the combined-batch gradient is the shards' average."""
    shards = []
    for rank in range(2):
        sampler = ResumableSampler(range(8), num_replicas=2, rank=rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(0)
        shards.append(list(sampler))
    images = blobs(4).tensors[0]
    x, y = torch.empty(8, 3, 32, 32), torch.empty(8, dtype=torch.long)
    for j in range(4):
        x[shards[0][j]], x[shards[1][j]] = images[j], images[j]
        y[shards[0][j]], y[shards[1][j]] = j, (j + 1) % 4
    return bundle(TensorDataset(x, y), blobs(20, seed=3))


def test_two_process_ddp_step_equals_one_process_on_the_combined_batch(tmp_path):
    # one plain SGD step with a rate so large that the update dwarfs the weights' fp32 rounding, so the gradient
    # reads back from the weights as (start - after) / lr
    kw = dict(**TINY, epochs=1, batch_size=8, lr=100.0, momentum=0.0, weight_decay=0.0, warmup_epochs=0,
              schedule="constant", label_smoothing=0.0, amp=False, channels_last=False, seed=5)
    data = _paired_data(seed=5)
    launch_local(train, 2, TrainConfig(**kw, output=str(tmp_path / "ddp")), data)
    single = train(TrainConfig(**kw, output=str(tmp_path / "one")), data)
    ddp_ckpt, one_ckpt = read_checkpoint(tmp_path / "ddp" / "last.pt"), read_checkpoint(tmp_path / "one" / "last.pt")
    assert ddp_ckpt["step"] == one_ckpt["step"] == 1
    torch.manual_seed(5)
    start = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4).state_dict()
    params = dict(create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4).named_parameters())
    grads = {}
    for run, ckpt in (("ddp", ddp_ckpt), ("one", one_ckpt)):
        grads[run] = torch.cat([(start[n].double() - ckpt["model"][n].double()).flatten() / 100.0 for n in params])
    # fp32 tolerance: backprop through 14 batch-norm layers sums the same terms in a different order
    diff = grads["ddp"] - grads["one"]
    assert diff.norm() <= 1e-4 * grads["one"].norm()
    assert diff.abs().max() <= 1e-4 * grads["one"].abs().max()
    assert any((start[n] != one_ckpt["model"][n]).any() for n in params)
    # the DDP checkpoint loads and evaluates; its sharded evaluation during training agrees with a single process
    model, ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    metrics = evaluate(model, data.val)
    assert metrics["count"] == 20
    assert ckpt["history"][0]["val_top1"] == pytest.approx(metrics["top1"])
    one_model, _ = load_checkpoint(tmp_path / "one" / "last.pt")
    assert single["top1"] == pytest.approx(evaluate(one_model, data.val)["top1"])


def test_cli_train_eval_predict_and_bench_train(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(["train", "--alpha", "0.25", "--resolution", "32", "--limit", "48", "--batch-size", "16",
                "--epochs", "1", "--no-progress", "--output", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 3 and result["mult_adds"] > 0 and Path(result["checkpoint"]).exists()

    assert cli(["eval", "--checkpoint", str(run), "--limit", "48", "--json", "--confusion",
                str(tmp_path / "c.png")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 48 and 0 <= metrics["top1"] <= metrics["top5"] <= 100
    assert len(metrics["per_class"]) == len(PATTERNS) and sum(map(sum, metrics["confusion"])) == 48
    assert metrics["top1"] == pytest.approx(result["top1"])  # the same weights and val images as in training
    assert (tmp_path / "c.png").stat().st_size > 1000

    from PIL import Image

    from mobilenet.data.patterns import PatternsDataset
    image = tmp_path / "pattern.png"
    Image.fromarray(PatternsDataset("val", 80).image(0).permute(1, 2, 0).numpy()).save(image)
    assert cli(["predict", "--checkpoint", str(run / "best.pt"), str(image), "--top-k", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert len(preds) == 3 and preds[0]["prob"] >= preds[1]["prob"] >= preds[2]["prob"]

    assert cli(["train", "--resume", str(run), "--lr", "0.5", "--no-progress"]) == 2
    assert "cannot resume with different options (lr:" in capsys.readouterr().err

    assert cli(["bench-train", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32", "--batch-size", "4",
                "--steps", "1", "--rounds", "1", "--warmup", "0", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    speeds = {v["variant"]: v["images_per_s"] for v in bench["variants"]}
    assert bench["ratio"] == pytest.approx(speeds["bf16 + channels_last"] / speeds["eager fp32 NCHW"])


def test_cli_eval_and_predict_on_other_backends(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert cli(["train", "--alpha", "0.25", "--resolution", "32", "--limit", "48", "--batch-size", "16",
                "--epochs", "1", "--no-progress", "--output", str(run), "--json"]) == 0
    capsys.readouterr()
    top1 = {}
    for backend in ("torch", "onnxruntime"):
        assert cli(["eval", "--checkpoint", str(run), "--limit", "48", "--json", "--backend", backend]) == 0
        top1[backend] = json.loads(capsys.readouterr().out)["top1"]
    assert top1["onnxruntime"] == pytest.approx(top1["torch"])  # same weights, float32 in both

    from PIL import Image

    from mobilenet.data import load_data

    bundle = load_data("shapes", resolution=32, augment="none", limit=4)
    x = bundle.val[0][0] * torch.tensor(bundle.std).view(3, 1, 1) + torch.tensor(bundle.mean).view(3, 1, 1)
    image = tmp_path / "one.png"
    Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")).save(image)
    probs = {}
    for backend in ("torch", "onnxruntime"):
        assert cli(["predict", "--checkpoint", str(run), str(image), "--json", "--backend", backend]) == 0
        preds = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
        probs[backend] = [p["prob"] for p in preds]
    assert probs["onnxruntime"] == pytest.approx(probs["torch"], abs=1e-5)


def test_evaluate_takes_a_plain_callable():
    # A backend runner is a function from a batch to logits: no parameters, no eval(); it gives the same counts.
    model = create_model("mobilenet_v1", alpha=0.25, resolution=32, num_classes=4).eval()
    x, y = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(12) % 4
    data = torch.utils.data.TensorDataset(x, y)
    as_module = evaluate(model, data, batch_size=5)
    as_function = evaluate(lambda batch: model(batch).detach().numpy(), data, batch_size=5, num_classes=4)
    assert as_function["confusion"] == as_module["confusion"] and as_function["count"] == 12
    assert as_function["loss"] == pytest.approx(as_module["loss"])
