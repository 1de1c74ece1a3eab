"""How long a training run will take on this machine: measured, not assumed, for an honest ETA.

A few synthetic training steps of a configuration give its seconds per image; an epoch then costs the training
images at that rate plus the validation pass (about a third of a step per image), loading every image, and the
checkpoints. A procedural dataset draws each image once per process, the first time it is read.
"""

from __future__ import annotations

import time

import torch

from ..models import create_model
from ..optim import descend, training_loss
from ..timing import measure

_EVAL_FRACTION = 1 / 3  # a forward pass costs about a third of a training step


def seconds_per_sample(model_name: str, alpha: float, resolution: int, num_classes: int, in_chans: int,
                       batch_size: int, channels_last: bool = False) -> float:
    """Wall-clock seconds per image of a training step (forward, backward, SGD update), fp32."""
    torch.manual_seed(0)
    model = create_model(model_name, alpha=alpha, resolution=resolution, num_classes=num_classes,
                         in_chans=in_chans).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch_size, in_chans, resolution, resolution)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,))

    def step():
        descend(opt, training_loss(model, x, y)[0])

    # One warm-up step (allocator, kernel choice) and two timed ones: each step costs a real training step.
    return measure(step, min_time=0.0, max_runs=2, warmup=1).median / batch_size


def loading_seconds(dataset, n: int = 32) -> tuple[float, float]:
    """(seconds to draw one image the first time it is read, seconds to load one already drawn image through the
    training loop's per-sample seeding and augmentation), from the first ``n`` images of ``dataset``."""
    from ..resumable import SeededSamples

    samples, indices = SeededSamples(dataset, 0), range(min(n, len(dataset)))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        for i in indices:
            samples[i]
        times.append((time.perf_counter() - start) / max(1, len(indices)))
    return max(0.0, times[0] - times[1]), times[1]


def run_cost(spec, bundle, sample_s: float, load_s: float, timing_repeats: int) -> tuple[float, float]:
    """Estimated (seconds per epoch, seconds that do not grow with epochs) of one run of ``spec`` on ``bundle``."""
    n_test = len(bundle.test) if bundle.test is not None else 0
    params = sum(p.numel() for p in create_model(spec.model, alpha=spec.alpha, num_classes=len(bundle.class_names),
                                                 in_chans=bundle.in_chans).parameters())
    # Training and validation each epoch, plus writing last.pt/best.pt (weights and momentum, ~200 MB/s).
    per_epoch = (len(bundle.train) * (sample_s + load_s) + len(bundle.val) * (sample_s * _EVAL_FRACTION + load_s)
                 + 2 * 8 * params / 2e8)
    fixed = n_test * (sample_s * _EVAL_FRACTION + load_s) + (timing_repeats + 2) * 32 * sample_s * _EVAL_FRACTION + 3.0
    return per_epoch, fixed
