"""One interface over every way to run a model: ``make_runner(model, backend)(images) -> logits``.

* ``torch``: eager PyTorch, NCHW, BN unfolded — the baseline every speed-up is measured against.
* ``torch-fast``: BN folded, channels_last memory format, ``torch.compile`` (inductor) with freezing, which turns
  weights into constants so convolutions get pre-packed oneDNN weights. Falls back to the folded channels_last
  eager model where compilation is unavailable.
* ``torch-bf16``: ``torch-fast`` under bf16 autocast, where the CPU has bf16 instructions (AVX512-BF16 or AMX,
  used by oneDNN); elsewhere it runs fp32 and says so in its ``precision``.
* ``torch-int8``: ``torch-fast`` on a PT2E int8 copy calibrated on ``calib`` images, compiled into oneDNN int8
  kernels (:mod:`mobilenet.deploy.torch_int8`; needs torchao).
* ``onnxruntime``: the exported float32 ONNX graph in ONNX Runtime's CPU provider.
* ``onnxruntime-int8``: the statically quantized int8 graph (:mod:`mobilenet.deploy.quantize`).
* ``openvino``, ``openvino-bf16``, ``openvino-int8``: the same ONNX graph compiled by OpenVINO
  (:mod:`mobilenet.deploy.openvino`; needs the ``openvino`` extra).
* ``litert``, ``litert-int8``: the float ONNX graph, or the int8 one of ``onnxruntime-int8`` (all ops int8, no
  channel padding), converted to TensorFlow Lite and run by XNNPACK (:mod:`mobilenet.deploy.litert_fp32`,
  :mod:`mobilenet.deploy.litert`; needs the ``litert`` extra).
* ``auto``: the fastest of the above on this machine within a top-1 budget (:mod:`mobilenet.deploy.auto`).

Every runner takes a normalised float batch (B, C, H, W) as a numpy array or a tensor and returns float32 logits
as a tensor; a batch with the wrong layout or channel count is a :class:`~mobilenet.errors.MobileNetError`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import MobileNetError
from ..heap import retain_freed_memory
from .export import check_matches, export_onnx, read_info
from .fold import fold_bn
from .images import sample_images
from .onnx_io import INPUT_NAME, OUTPUT_NAME, ort_session
from .quantize import quantize_onnx
from .source import ModelInfo, model_info

CONCRETE = ("torch", "torch-fast", "torch-bf16", "torch-int8", "onnxruntime", "onnxruntime-int8", "litert",
            "litert-int8", "openvino", "openvino-bf16", "openvino-int8")
BACKENDS = (*CONCRETE, "auto")
RECOMPILE_LIMIT = 256  # compiled graphs per process across all compiled torch runners
# Input shapes per compiled runner with a graph of their own. A graph specialised to its batch size ran 10-20 %
# faster than one with a dynamic batch axis (V3-Large, 224 px, batch 32, AMX Xeon: torch-int8 47 vs 55-60 ms,
# torch-bf16 42 vs 49 ms); four covers a fixed batch plus a last partial one, and the server's warm-up sizes.
STATIC_SHAPES = 4
# Judged by top-1 on validation images, not by a 1e-4 parity.
REDUCED = ("torch-bf16", "torch-int8", "onnxruntime-int8", "litert-int8", "openvino-bf16", "openvino-int8")
# The optional package behind each backend family (plain torch needs none).
PACKAGES = {"torch-int8": "torchao", "onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "openvino": "openvino"}


def available_backends() -> tuple[str, ...]:
    """The concrete backends whose packages are installed here."""
    import importlib.util

    def package(backend: str) -> str | None:
        return PACKAGES.get(backend, PACKAGES.get(backend.split("-")[0]))

    return tuple(b for b in CONCRETE if package(b) is None or importlib.util.find_spec(package(b)) is not None)


class Runner:
    """A callable that maps a normalised image batch to logits with one backend.

    Attributes:
        backend: one of ``BACKENDS``.
        info: the model's :class:`~mobilenet.deploy.source.ModelInfo`.
        note: how the backend was set up, including any fallback taken.
        module: the PyTorch module behind a torch backend (``None`` for ONNX Runtime).
        onnx_path: the ONNX file behind an ONNX Runtime or OpenVINO backend.
        precision: the arithmetic that actually runs: ``fp32``, ``bf16``, ``int8`` (``int8+bf16``: int8 layers
            with the rest in bf16).
    """

    def __init__(self, backend: str, info: ModelInfo, fn: Callable[[torch.Tensor | np.ndarray], torch.Tensor],
                 note: str = "", module: nn.Module | None = None, onnx_path: str | None = None,
                 precision: str = "fp32"):
        self.backend, self.info, self._fn, self.note, self.precision = backend, info, fn, note, precision
        self.module, self.onnx_path = module, onnx_path
        self.auto: dict | None = None  # for backend auto: the timings, top-1 drops and choice it was picked by
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __call__(self, images) -> torch.Tensor:
        return self._fn(self._check(images))

    def _check(self, images):
        if not isinstance(images, (np.ndarray, torch.Tensor)):
            raise MobileNetError(f"expected a numpy array or tensor batch, got {type(images).__name__}")
        if images.ndim != 4:
            raise MobileNetError(f"expected a batch of images shaped (B, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] != self.info.in_chans:
            raise MobileNetError(
                f"{self.info.name} takes {self.info.in_chans}-channel images, got {images.shape[1]} channels "
                f"(shape {tuple(images.shape)})")
        return images

    def __repr__(self) -> str:
        return f"Runner({self.backend!r}, {self.info.name}, {self.note})"


def make_runner(model: nn.Module | None, backend: str, info: ModelInfo | None = None, *,
                onnx_path: str | None = None, calib: torch.Tensor | None = None, threads: int | None = None,
                compile: bool = True, batch: int = 1, val=None, max_top1_drop: float = 0.5) -> Runner:
    """Builds a :class:`Runner` for ``model`` on ``backend``.

    Args:
        model: the PyTorch model (eval mode is set; it is not modified). May be ``None`` for the backends that run
            an ONNX file when ``onnx_path`` is given; the file's metadata then describes the model.
        backend: one of ``BACKENDS``.
        info: class names and normalisation (default: from the model).
        onnx_path: an existing ONNX file for the ONNX Runtime, LiteRT and OpenVINO backends (int8 for
            ``onnxruntime-int8``, float32 for the others: the LiteRT and OpenVINO backends convert or quantize it
            themselves); it must have been exported from this model. Without it the model is exported
            (and, for int8, quantized with ``calib``) into a temporary directory.
        calib: normalised calibration images for int8 when no file is given (default: 32 sample images).
        threads: threads for ONNX Runtime, LiteRT and OpenVINO (default: ``torch.get_num_threads()``).
        compile: use ``torch.compile`` for ``torch-fast``, ``torch-bf16`` and ``torch-int8`` (``False``: eager,
            which for ``torch-int8`` is the slow reference path).
        batch, val, max_top1_drop: for ``auto`` only (see :func:`mobilenet.deploy.auto.auto_runner`).

    Raises:
        MobileNetError: an unknown backend, a missing/foreign ONNX file, or no model and no file.
    """
    if backend not in BACKENDS:
        raise MobileNetError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if model is None and (onnx_path is None or backend.startswith("torch")):
        raise MobileNetError(f"backend {backend} needs a model" + ("" if backend.startswith("torch")
                                                                    else " or an ONNX file"))
    if model is not None:
        model.eval()
        info = info or model_info(model)
    retain_freed_memory()  # large batches would otherwise page-fault their activations in on every call
    if backend == "auto":
        from .auto import auto_runner
        return auto_runner(model, info, batch=batch, val=val, max_top1_drop=max_top1_drop, calib=calib,
                           threads=threads, compile=compile)
    if backend == "torch":
        return _torch_runner(model, info)
    if backend in ("torch-fast", "torch-bf16", "torch-int8"):
        return _torch_fast_runner(model, info, compile, backend, calib)
    if backend.startswith("openvino"):
        return _openvino_runner(model, backend, info, onnx_path, calib, threads)
    if backend.startswith("litert"):
        return _litert_runner(model, backend, info, onnx_path, calib, threads)
    return _ort_runner(model, backend, info, onnx_path, calib, threads)


def _as_tensor(images) -> torch.Tensor:
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    return x.float()


def _torch_runner(model: nn.Module, info: ModelInfo) -> Runner:
    def run(images):
        with torch.inference_mode():
            return model(_as_tensor(images))
    return Runner("torch", info, run, "eager, NCHW, BN unfolded", module=model)


def _torch_fast_runner(model: nn.Module, info: ModelInfo, use_compile: bool, backend: str, calib=None) -> Runner:
    folded = fold_bn(model).to(memory_format=torch.channels_last)
    compiled = None
    # oneDNN runs bf16 convolutions natively only with AVX512-BF16 or AMX; elsewhere autocast would emulate them,
    # slower than fp32, so the backend stays fp32 and reports it. torch-int8 runs the ops its quantizer leaves float
    # (V3's squeeze-excite gating, pooling) in bf16 there too: V3-Large at batch 32 on an AMX Xeon, 42-44 ms
    # against 47-48 ms with them in fp32.
    use_bf16 = backend in ("torch-bf16", "torch-int8") and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16)
    precision = "bf16" if use_bf16 else "fp32"
    prefix = "BN folded, channels_last"
    if backend == "torch-int8":
        from .torch_int8 import quantize_torch

        calib = torch.from_numpy(_calibration(calib, info))
        folded, precision = quantize_torch(folded, calib), "int8+bf16" if use_bf16 else "int8"
        prefix = f"PT2E x86 int8 calibrated on {len(calib)} images"
    note = f"{prefix}, eager"
    if use_compile and hasattr(torch, "compile"):
        try:
            compiled = torch.compile(folded, dynamic=False)
            note = f"{prefix}, torch.compile (inductor, freezing)"
        except Exception as e:  # no compiler toolchain or an unsupported platform
            note = f"{prefix}, eager (torch.compile unavailable: {type(e).__name__})"
    # The first STATIC_SHAPES input shapes get a graph each, specialised to their batch size; later shapes share
    # one graph with a dynamic batch axis, compiled on a copy of the module so that its cache entry (which would
    # match every shape) cannot capture the specialised ones.
    state = {"compiled": compiled, "dynamic": None, "shapes": set()}

    def graph_for(shape):
        if shape in state["shapes"] or len(state["shapes"]) < STATIC_SHAPES:
            return state["compiled"], shape not in state["shapes"]
        if state["dynamic"] is None:
            state["dynamic"] = torch.compile(copy.deepcopy(folded))
            return state["dynamic"], True
        return state["dynamic"], False

    def run(images):
        with torch.inference_mode():  # an inference tensor whatever the caller's mode (see below)
            x = _as_tensor(images).contiguous(memory_format=torch.channels_last)
        if state["compiled"] is not None:
            try:
                fn, compiling = graph_for(x.shape)
                if fn is state["dynamic"] and x.shape[0] > 1:  # only the batch axis varies (dynamo fixes sizes 0, 1)
                    torch._dynamo.mark_dynamic(x, 0)
                # Freezing must be switched on in the inductor config: passed in torch.compile(options=...) it is
                # ignored. It is read when a graph is compiled, i.e. on the first call for each input shape.
                # Dynamo keys its cache on the forward's code object, which every model shares, so each runner's
                # module and input shape adds an entry there; past the default limit (8) later runners would
                # silently run eager.
                # A new input shape compiles; inductor's int8 lowering then warns about its own tensor copies,
                # which is not the user's business. Later calls skip the (global, not thread-safe) filter change.
                # Inference mode whatever the caller's: a compiled graph guards on its input's dispatch keys, which
                # differ between inference and normal tensors and between inference mode and no_grad, and a caller
                # switching would compile the graph a second time.
                with torch.inference_mode(), torch._inductor.config.patch(freezing=True), autocast, \
                        torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT), \
                        warnings.catch_warnings() if compiling else contextlib.nullcontext():
                    if compiling:  # (a warning raised from C++ carries its file's path, not a module name)
                        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._inductor")
                        warnings.filterwarnings("ignore", message="To copy construct from a tensor",
                                                category=UserWarning)
                    out = fn(x).float()
                if len(state["shapes"]) < STATIC_SHAPES:
                    state["shapes"].add(x.shape)
                return out
            except Exception as e:  # a failing C++ toolchain shows up on the first call, not at torch.compile
                state["compiled"] = None
                runner.note = f"{prefix}, eager (torch.compile failed: {type(e).__name__})"
                warnings.warn(f"torch.compile failed, running eager: {e}", RuntimeWarning, stacklevel=2)
        with torch.inference_mode(), autocast:
            return folded(x).float()

    runner = Runner(backend, info, run, f"{note}, {precision}", module=folded, precision=precision)
    return runner


def _onnx_file(model, info: ModelInfo | None, onnx_path: str | None):
    """``(path, info, note, tmp)``: ``onnx_path`` checked against the model, or a fresh export into ``tmp``."""
    if onnx_path is not None:
        stored = check_matches(onnx_path, info) if info is not None else read_info(onnx_path)
        return onnx_path, info or stored, os.path.basename(onnx_path), None
    tmp = tempfile.TemporaryDirectory(prefix="mobilenet-")
    path = os.path.join(tmp.name, f"{info.name}.onnx")
    export_onnx(model, path, info)
    return path, info, "exported fp32", tmp


def _calibration(calib, info: ModelInfo) -> np.ndarray:
    """``calib`` as a float32 array, or 32 sample images when none were given."""
    if calib is None:
        calib, _ = sample_images(32, info.resolution, info.in_chans, info.mean, info.std, seed=1)
    return np.ascontiguousarray(calib.numpy() if isinstance(calib, torch.Tensor) else calib, dtype=np.float32)


def _openvino_runner(model, backend: str, info: ModelInfo | None, onnx_path: str | None, calib, threads) -> Runner:
    from .openvino import compile_openvino

    path, info, _, tmp = _onnx_file(model, info, onnx_path)
    calib = _calibration(calib, info) if backend == "openvino-int8" else None
    run, precision, note = compile_openvino(path, backend, threads or torch.get_num_threads(), calib)
    runner = Runner(backend, info, run, note, onnx_path=path, precision=precision)
    runner._tmp = tmp
    return runner


def _litert_runner(model, backend: str, info: ModelInfo | None, onnx_path: str | None, calib, threads) -> Runner:
    import onnx

    from .litert import compile_litert, to_tflite
    from .litert_fp32 import fp32_to_tflite

    path, info, source, tmp = _onnx_file(model, info, onnx_path)
    graph = onnx.load(path)
    if _is_quantized(graph):
        raise MobileNetError(f"{path!r} is an int8 model; {backend} converts a float ONNX file itself")
    if backend == "litert":
        flatbuffer, precision, note = fp32_to_tflite(graph), "fp32", f"LiteRT, {source}"
    else:
        tmp = tmp or tempfile.TemporaryDirectory(prefix="mobilenet-")
        calib = _calibration(calib, info)
        qdq = quantize_onnx(path, os.path.join(tmp.name, f"{info.name}.qdq.onnx"), calib, keep_float=(), align=False)
        flatbuffer, precision = to_tflite(onnx.load(qdq)), "int8"
        note = f"LiteRT, int8 (U8 activations as S8, S8 per-channel weights) calibrated on {len(calib)} images"
    run, coverage = compile_litert(flatbuffer, threads or torch.get_num_threads())
    runner = Runner(backend, info, run, f"{note}; {coverage}", onnx_path=path, precision=precision)
    runner._tmp = tmp
    return runner


def _is_quantized(proto) -> bool:
    return any(node.op_type in ("QLinearConv", "ConvInteger", "QuantizeLinear") for node in proto.graph.node)


def _ort_runner(model, backend: str, info: ModelInfo | None, onnx_path: str | None, calib, threads) -> Runner:
    path, info, source, tmp = _onnx_file(model, info, onnx_path)
    note = f"ONNX Runtime, {source}"
    if backend == "onnxruntime-int8" and onnx_path is None:
        calib = _calibration(calib, info)
        int8_path = os.path.join(tmp.name, f"{info.name}.int8.onnx")
        quantize_onnx(path, int8_path, calib)
        path = int8_path
    session = ort_session(path, threads)
    proto = _load_graph(path)
    quantized = _is_quantized(proto)
    if backend == "onnxruntime-int8" and onnx_path is None:  # what quantize_onnx recorded: format, float ops
        recorded = next((p.value for p in proto.metadata_props if p.key == "mobilenet.precision"), "int8")
        note = f"ONNX Runtime, {recorded}, calibrated on {len(calib)} images"
    if backend == "onnxruntime-int8" and not quantized:
        raise MobileNetError(f"{path!r} is a float model; the onnxruntime-int8 backend needs `mobilenet quantize`'s "
                             "output")
    if backend == "onnxruntime" and quantized:
        raise MobileNetError(f"{path!r} is an int8 model; use the onnxruntime-int8 backend for it")

    def run(images):
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        x = np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])

    runner = Runner(backend, info, run, note, onnx_path=path, precision="int8" if quantized else "fp32")
    runner._tmp = tmp  # keeps the temporary files alive as long as the runner
    return runner


def _load_graph(path: str):
    import onnx
    return onnx.load(path, load_external_data=False)
