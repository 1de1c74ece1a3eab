"""Choosing one number of epochs, the same for every model, so the whole training plan fits a time budget.

The machine's speed is measured, not assumed: a few synthetic training steps of every planned configuration, and
the time to draw and augment a few samples. Every model then trains for the same number of epochs (the paper's
comparisons are at equal training), the largest that the estimate says fits. The estimate, its inputs and the
choice all go into the report.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..models import create_model

SAFETY = 0.85  # plan for this share of the budget: the machine's load moves while the runs go
MAX_EPOCHS = 60
_EVAL_FRACTION = 1 / 3  # a forward pass costs about a third of a training step


def seconds_per_sample(model_name: str, alpha: float, resolution: int, num_classes: int, in_chans: int,
                       batch_size: int) -> float:
    """Wall-clock seconds per image of a training step (forward, backward, SGD update), fp32 NCHW."""
    torch.manual_seed(0)
    model = create_model(model_name, alpha=alpha, resolution=resolution, num_classes=num_classes,
                         in_chans=in_chans).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch_size, in_chans, resolution, resolution)
    y = torch.randint(0, num_classes, (batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # allocator and kernel warm-up
    start = time.perf_counter()
    step()
    step()
    return (time.perf_counter() - start) / (2 * batch_size)


def data_seconds(dataset, count: int = 24) -> tuple[float, float]:
    """(seconds to draw one new sample the first time, seconds to load and augment one already drawn)."""
    count = min(count, len(dataset))
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    first = (time.perf_counter() - start) / max(count, 1)
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    again = (time.perf_counter() - start) / max(count, 1)
    return max(first - again, 0.0), again


def fit_epochs(runs: list, bundles: dict, batch_size: int, timing_repeats: int, deadline: float,
               progress: bool = False) -> dict:
    """The largest equal number of epochs for ``runs`` (a list of ``RunSpec``, one entry per seed) that fits.

    Args:
        runs: the runs that must fit (every configuration's first seed, plus the extra seeds asked for the
            Table 4 and 5 pairs).
        bundles: resolution -> the data bundle the runs will use.
        batch_size: training batch.
        timing_repeats: timed batches of the inference-time measurement after each run.
        deadline: ``time.time()`` by which the training must be done (this measurement's own time counts).

    Returns:
        ``{"epochs", "per_epoch_s", "fixed_s", "left_s", "sample_s": {key: s}, "render_s", "load_s"}``: the
        estimated seconds per epoch of all the runs together, the seconds that do not grow with epochs, and the
        seconds left when the measurement finished.
    """
    from tqdm.auto import tqdm

    any_bundle = next(iter(bundles.values()))
    classes, chans = len(any_bundle.class_names), any_bundle.in_chans
    render, load = data_seconds(any_bundle.train)
    sample_s = {}
    for spec in tqdm({s.key: s for s in runs}.values(), desc="reproduce: measuring speed", unit="model",
                     disable=not progress):
        sample_s[spec.key] = seconds_per_sample(spec.model, spec.alpha, spec.resolution, classes, chans, batch_size)
    per_epoch = fixed = 0.0
    for spec in runs:
        b, s = bundles[spec.resolution], sample_s[spec.key]
        n_test = len(b.test) if b.test is not None else 0
        params = sum(p.numel() for p in create_model(spec.model, alpha=spec.alpha, num_classes=classes,
                                                     in_chans=chans).parameters())
        # Training and validation each epoch, plus writing last.pt/best.pt (weights and momentum, ~200 MB/s).
        per_epoch += len(b.train) * (s + load) + len(b.val) * (s * _EVAL_FRACTION + load) + 2 * 8 * params / 2e8
        fixed += n_test * (s * _EVAL_FRACTION + load) + (timing_repeats + 2) * 32 * s * _EVAL_FRACTION + 3.0
    fixed += sum((len(b.train) + len(b.val) + (len(b.test) if b.test is not None else 0)) * render
                 for b in bundles.values())
    left = deadline - time.time()
    epochs = int((SAFETY * left - fixed) // per_epoch) if per_epoch > 0 else 1
    return {"epochs": max(1, min(MAX_EPOCHS, epochs)), "per_epoch_s": per_epoch, "fixed_s": fixed,
            "left_s": left, "safety": SAFETY, "sample_s": sample_s, "render_s": render, "load_s": load}
