"""Choosing one number of epochs, the same for every model, so the whole training plan fits a time budget.

The machine's speed is measured, not assumed: a few synthetic training steps of every planned configuration, and
the time to draw and augment a few samples. Every model then trains for the same number of epochs (the paper's
comparisons are at equal training), the largest for which the runs that must fit (Tables 4-7) do; every other
run's estimate is kept, to decide later whether it fits in the time left. The estimate, its inputs and the choice
all go into the report.
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


def fit_epochs(runs: list, bundles: dict, batch_size: int, timing_repeats: int, deadline: float,
               progress: bool = False, optional: list = (), channels_last: bool = False) -> dict:
    """The largest equal number of epochs for ``runs`` (a list of ``RunSpec``, one entry per seed) that fits.

    Args:
        runs: the runs that must fit (Tables 4-7 at the first seed).
        bundles: resolution -> the data bundle the runs will use.
        batch_size: training batch.
        timing_repeats: timed batches of the inference-time measurement after each run.
        deadline: ``time.time()`` by which the training must be done (this measurement's own time counts).
        progress: show a progress bar.
        optional: runs that go only on time left over; their cost is estimated too (``"cost"``), not fitted.
        channels_last: measure in the memory format the runs will train in.

    Returns:
        ``{"epochs", "per_epoch_s", "fixed_s", "left_s", "sample_s": {key: s}, "cost": {key: (per_epoch_s,
        fixed_s)}, "render_s", "load_s"}``: the estimated seconds per epoch of the fitted runs together, the
        seconds that do not grow with epochs, the seconds left when the measurement finished, and each
        configuration's own estimate.
    """
    from tqdm.auto import tqdm

    any_bundle = next(iter(bundles.values()))
    classes, chans = len(any_bundle.class_names), any_bundle.in_chans
    render, load = data_seconds(any_bundle.train)
    specs = {s.key: s for s in list(runs) + list(optional)}
    sample_s, cost = {}, {}
    for spec in tqdm(specs.values(), desc="reproduce: measuring speed", unit="model", disable=not progress):
        sample_s[spec.key] = seconds_per_sample(spec.model, spec.alpha, spec.resolution, classes, chans, batch_size,
                                                channels_last)
        cost[spec.key] = run_cost(spec, bundles[spec.resolution], sample_s[spec.key], load, timing_repeats)
    per_epoch = sum(cost[spec.key][0] for spec in runs)
    fixed = sum(cost[spec.key][1] for spec in runs)
    fixed += sum((len(b.train) + len(b.val) + (len(b.test) if b.test is not None else 0)) * render
                 for b in bundles.values())
    left = deadline - time.time()
    epochs = int((SAFETY * left - fixed) // per_epoch) if per_epoch > 0 else 1
    return {"epochs": max(1, min(MAX_EPOCHS, epochs)), "per_epoch_s": per_epoch, "fixed_s": fixed,
            "left_s": left, "safety": SAFETY, "sample_s": sample_s, "cost": cost, "render_s": render, "load_s": load}
