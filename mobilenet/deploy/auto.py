"""``--backend auto``: the fastest backend on this machine for this model and batch size, within a top-1 budget.

On first use every installed candidate is built and timed briefly, each as if it ran alone
(:func:`mobilenet.timing.alternate`); reduced-precision candidates (bf16, int8) are eligible only when validation
images were given, so that their top-1 delta against the float model was measured. The fastest candidate whose
top-1 drop is at most ``max_top1_drop`` points wins. The decision is cached in a JSON file keyed by the machine,
the library versions, the thread count, the model configuration with a fingerprint of its weights, and the batch
size, so later runs build only the winner.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ..errors import MobileNetError
from ..timing import SETTLE, SETTLE_TIME, alternate, library_versions, machine_name

CACHE_ENV = "MOBILENET_AUTO_CACHE"


def cache_path() -> str:
    """``$MOBILENET_AUTO_CACHE``, else ``$XDG_CACHE_HOME/mobilenet/auto.json`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mobilenet", "auto.json")


def cache_key(model, info, batch: int, threads: int, with_val: bool) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    versions = ",".join(f"{k}={v}" for k, v in sorted(library_versions().items()))
    return (f"{machine_name()}|{threads}t|{versions}|{info.name} a{info.alpha:g} r{info.resolution} "
            f"c{info.num_classes} in{info.in_chans} w{digest.hexdigest()[:16]}|b{batch}|val={with_val}")


def pick(seconds: dict[str, float], drops: dict[str, float | None], max_top1_drop: float) -> str:
    """The fastest backend in ``seconds`` whose top-1 drop (points; ``None``: not measured) is within budget.

    Float backends need no measured drop (they match PyTorch to 1e-4); reduced precision is eligible only with one.
    """
    from .backends import REDUCED

    eligible = [b for b in seconds if b not in REDUCED or (drops.get(b) is not None and drops[b] <= max_top1_drop)]
    if not eligible:
        raise MobileNetError("no backend is within the top-1 budget")
    return min(eligible, key=seconds.__getitem__)


def top1(runner, images: torch.Tensor, labels: torch.Tensor, batch: int = 64) -> float:
    """Top-1 accuracy in percent of ``runner`` on ``images``."""
    pred = torch.cat([runner(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return 100 * float((pred == labels).float().mean())


def decide(model, info, batch: int, val, max_top1_drop: float, calib, threads: int, compile: bool,
           candidates=None) -> tuple[dict, dict]:
    """Builds and times every candidate; returns ``(decision, runners)`` (see :func:`auto_runner`)."""
    from .backends import REDUCED, available_backends, make_runner

    names = [b for b in (candidates or available_backends()) if val is not None or b not in REDUCED]
    runners = {b: make_runner(model, b, info, calib=calib, threads=threads, compile=compile) for b in names}
    drops: dict[str, float | None] = {b: None for b in names}
    if val is not None:
        images, labels = val
        reference = top1(runners.get("torch") or make_runner(model, "torch", info), images, labels)
        for b in names:
            drops[b] = reference - top1(runners[b], images, labels)
    x = torch.randn(batch, info.in_chans, info.resolution, info.resolution)
    with torch.inference_mode():
        timings = alternate({b: (lambda r=r: r(x)) for b, r in runners.items()}, rounds=3, block=3, warmup=2,
                            settle=SETTLE, settle_time=SETTLE_TIME)
    seconds = {b: t.median for b, t in timings.items()}
    choice = pick(seconds, drops, max_top1_drop)
    decision = {"backend": choice, "seconds": seconds, "top1_drop": drops, "max_top1_drop": max_top1_drop,
                "precision": runners[choice].precision}
    return decision, runners


def auto_runner(model, info, batch: int = 1, val=None, max_top1_drop: float = 0.5, calib=None,
                threads: int | None = None, compile: bool = True, candidates=None):
    """The runner of the fastest backend within ``max_top1_drop`` points of top-1, chosen once per machine.

    Args:
        model: the PyTorch model (needed: every candidate is built from it).
        info: its :class:`~mobilenet.deploy.source.ModelInfo`.
        batch: the batch size the runner will mostly see; the choice is made and cached per batch size.
        val: ``(images, labels)``: normalised validation images and their labels. Without them only float
            backends are candidates, since a reduced precision's accuracy cost would be unmeasured.
        max_top1_drop: the most top-1 (points) a backend may lose against PyTorch fp32 on ``val``.
        calib: calibration images for the int8 candidates (default: sample images).
        threads: intra-op threads for every candidate (default: torch's current number).
        candidates: backends to consider (default: every installed one).

    Returns:
        A :class:`~mobilenet.deploy.backends.Runner` of the chosen backend; its ``auto`` attribute holds the
        decision (times, top-1 drops, choice) and its note says it was chosen automatically.
    """
    from .backends import make_runner

    if model is None:
        raise MobileNetError("backend auto needs a model: it times every backend built from it")
    threads = threads or torch.get_num_threads()
    key = cache_key(model, info, batch, threads, val is not None)
    path = cache_path()
    cache = _read(path)
    decision = cache.get(key)
    if decision is not None and decision.get("max_top1_drop") == max_top1_drop and \
            (candidates is None or decision["backend"] in candidates):
        runner = make_runner(model, decision["backend"], info, calib=calib, threads=threads, compile=compile)
        how = "cached"
    else:
        decision, runners = decide(model, info, batch, val, max_top1_drop, calib, threads, compile, candidates)
        runner = runners[decision["backend"]]
        cache[key] = decision
        _write(path, cache)
        how = "timed now"
    runner.auto = decision
    runner.note = f"auto ({how}, batch {batch}): {runner.note}"
    return runner


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: decide again


def _write(path: str, cache: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file, never half of one


FILE_BACKENDS = ("onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16")  # all run one ONNX file


def export_auto(model, info, out_path: str, batch: int = 1, val=None, calib=None, max_top1_drop: float = 0.5,
                opset: int = 17):
    """Writes the ONNX file of the fastest ONNX-file backend (see :func:`auto_runner`) to ``out_path``.

    The fp32 file (ONNX Runtime and OpenVINO fp32/bf16: OpenVINO picks bf16 when it compiles) goes through
    :func:`~mobilenet.deploy.export.export_onnx`'s parity check; an int8 choice writes the quantized graph the
    choice was timed on. The backend is recorded in the file's metadata as ``mobilenet.backend``. Returns the
    chosen runner.
    """
    import shutil

    import onnx

    from .backends import available_backends
    from .export import export_onnx

    candidates = [b for b in FILE_BACKENDS if b in available_backends()]
    runner = auto_runner(model, info, batch=batch, val=val, max_top1_drop=max_top1_drop, calib=calib,
                         candidates=candidates)
    if runner.precision == "int8":
        shutil.copyfile(runner.onnx_path, out_path)
    else:
        export_onnx(model, out_path, info, opset=opset)
    graph = onnx.load(out_path)
    entry = graph.metadata_props.add()
    entry.key, entry.value = "mobilenet.backend", runner.backend
    onnx.save(graph, out_path)
    return runner
