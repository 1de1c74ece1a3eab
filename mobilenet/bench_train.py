"""Training throughput of the default fast path (bf16 autocast + channels_last) against plain eager NCHW fp32.

Every variant trains the same model (same initial weights) on the same synthetic batch with the same optimizer;
the variants are timed in interleaved rounds within one run, and each variant's median round is reported, so
that load from other processes on a shared machine hits all variants alike.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from .heap import retain_freed_memory
from .models import create_model
from .optim import descend, training_loss
from .timing import alternate

# name: (bf16 autocast, channels_last); the first is the baseline, the second the default training path.
VARIANTS = {
    "eager fp32 NCHW": (False, False),
    "bf16 + channels_last": (True, True),
    "fp32 + channels_last": (False, True),
    "bf16 NCHW": (True, False),
}
BASELINE, DEFAULT_PATH = "eager fp32 NCHW", "bf16 + channels_last"


@dataclass
class BenchResult:
    variant: str
    amp: bool
    channels_last: bool
    images_per_s: float
    rounds: list[float]


def _trainer(model_name: str, alpha: float, resolution: int, batch: int, amp: bool, channels_last: bool,
             num_classes: int, seed: int):
    torch.manual_seed(seed)
    model = create_model(model_name, alpha=alpha, resolution=resolution, num_classes=num_classes)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_chans, resolution, resolution, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch,), generator=g)

    def step() -> None:
        descend(optimizer, training_loss(model, x, y, amp)[0])

    return step


def bench_train(model: str = "mobilenet_v2", alpha: float = 1.0, resolution: int = 224, batch: int = 32,
                steps: int = 5, rounds: int = 3, warmup: int = 2, variants: list[str] | None = None,
                num_classes: int = 1000, seed: int = 0, progress=None) -> list[BenchResult]:
    """Images/s of training steps (forward, backward, SGD update) for each variant, on the CPU.

    Args:
        model, alpha, resolution: the model to train (α the width multiplier, resolution ρ·224).
        batch: images per step.
        steps: timed steps per round.
        rounds: interleaved rounds; each variant's median round is reported.
        warmup: untimed steps per variant before the first round (oneDNN picks and caches kernels).
        variants: names from ``VARIANTS``; default all, baseline first.
        progress: optional callable ``progress(n)`` called after every timed or warm-up step.
    """
    retain_freed_memory()  # as training does
    names = variants or list(VARIANTS)
    steppers = {name: _trainer(model, alpha, resolution, batch, *VARIANTS[name], num_classes, seed)
                for name in names}
    def counted(step):
        def run() -> None:
            step()
            if progress:
                progress(1)
        return run

    # Blocks of ``steps`` steps per variant, alternated round by round, so uneven load hits every variant alike.
    timings = alternate({name: counted(step) for name, step in steppers.items()}, rounds=rounds, block=steps,
                        warmup=warmup)
    results = []
    for name in names:
        per_round = [batch / seconds for seconds in timings[name].blocks]
        results.append(BenchResult(name, *VARIANTS[name], statistics.median(per_round), per_round))
    return results


def convergence(epochs: int, progress: bool = True) -> dict:
    """Trains the default demo model ``epochs`` epochs with the fast path (bf16 autocast + channels_last) and with
    eager fp32 NCHW, same seed, and returns each one's val top-1/top-5 and seconds, and the top-1 difference."""
    import tempfile

    from .train import TrainConfig, train

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fast in (("fast", True), ("eager", False)):
            cfg = TrainConfig(epochs=epochs, amp=fast, channels_last=fast, output=f"{tmp}/{name}", progress=progress)
            r = train(cfg)
            found[name] = {"top1": r["top1"], "top5": r["top5"], "seconds": r["seconds"]}
    found["difference"] = found["fast"]["top1"] - found["eager"]["top1"]
    return found
