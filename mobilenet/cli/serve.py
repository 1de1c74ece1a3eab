"""``mobilenet serve`` and ``bench-serve``: a model behind the Open Inference Protocol, and its load test."""

from __future__ import annotations

import argparse
import json
import sys

from ..deploy.backends import BACKENDS
from .deploy import _add_source, _checkpoint_val, _load
from .options import count, int_list, non_negative, positive_float, positive_int

DEFAULT_BACKEND = "auto" if "auto" in BACKENDS else "torch"


def _add_batching(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"inference backend (default {DEFAULT_BACKEND}); see `mobilenet bench`")
    p.add_argument("--max-top1-drop", type=float, default=0.5, metavar="POINTS",
                   help="for --backend auto: the most top-1 (percentage points) a bf16 or int8 backend may lose "
                        "against fp32 on the checkpoint's validation split (default 0.5)")
    p.add_argument("--name", metavar="N", help="the model name in URLs (default: the model's registered name)")
    p.add_argument("--max-batch", type=positive_int, default=32,
                   help="most images per model call, and per request (default 32)")
    p.add_argument("--max-delay-ms", type=non_negative, default=5.0,
                   help="how long a request may wait for others to join its batch (default 5)")
    p.add_argument("--max-queue", type=positive_int, default=256,
                   help="requests that may wait; one more is answered 503 with Retry-After (default 256)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="intra-op threads of the backend (default: torch's, one per core)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over HTTP (Open Inference Protocol / KServe v2) with dynamic batching",
        description="Serve a model over the Open Inference Protocol (KServe v2 REST, as Triton and KServe speak "
                    "it): /v2/health/ready, /v2/models/NAME (metadata), POST /v2/models/NAME/infer with a "
                    "normalised FP32 tensor 'input' [B, C, H, W] or encoded image files 'image' (BYTES, decoded "
                    "and preprocessed as `mobilenet predict` does), output 'logits' or, with the classification "
                    "extension, top-k 'score:index:label' strings. Concurrent requests are batched. Prometheus "
                    "metrics at /metrics. SIGTERM or Ctrl-C finishes the requests in flight and exits 0.")
    _add_source(p)
    _add_batching(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=count, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-body-mb", type=positive_float, default=16.0,
                   help="largest request body in MiB; larger ones get 413 (default 16)")
    p.set_defaults(func=run_serve)

    p = sub.add_parser(
        "bench-serve", help="closed-loop load on a local server vs the same backend offline",
        description="Start `mobilenet serve` on a free localhost port, send single-image requests from "
                    "CONCURRENCY clients that each wait for an answer before the next (a fixed number of "
                    "requests, a time limit per level), and print throughput, p50/p99 latency, the mean batch "
                    "the server formed, and served throughput over the backend's offline throughput at batch "
                    "min(concurrency, max-batch); then the serving goals and whether they are met.")
    _add_source(p)
    _add_batching(p)
    p.add_argument("--concurrency", type=int_list, default=[1, 8, 32], help="client counts (default 1,8,32)")
    p.add_argument("--requests", type=positive_int, default=2000, help="requests per level (default 2000)")
    p.add_argument("--time-limit", type=positive_float, default=30.0, help="seconds per level at most (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_bench_serve)


def _runner(args: argparse.Namespace):
    from ..deploy.backends import make_runner
    from ..serve import require

    require()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the torch backends' threads, and ONNX Runtime's default
    model, info = _load(args)
    # auto as eval, predict and export choose it: bf16 and int8 compete only when the checkpoint's validation split
    # has measured their top-1 drop.
    val, calib = _checkpoint_val(args.checkpoint) if args.backend == "auto" and args.checkpoint else (None, None)
    return make_runner(model, args.backend, info, val=val, calib=calib, max_top1_drop=args.max_top1_drop)


def run_serve(args: argparse.Namespace) -> int:
    from ..serve.app import ServeConfig, create_app, listen, serve, warm_up

    runner = _runner(args)
    config = ServeConfig(name=args.name or runner.info.name, max_batch=args.max_batch,
                         max_delay_ms=args.max_delay_ms, max_queue=args.max_queue, max_body_mb=args.max_body_mb)
    sock = listen(args.host, args.port)  # before warm-up: a taken port fails at once; early clients wait
    warm_up(runner, config.max_batch)
    app = create_app(runner, config)
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    print(f"serving {config.name} ({runner.backend}: {runner.note}; max batch {config.max_batch}, max delay "
          f"{config.max_delay_ms:g} ms) on http://{host}:{port}", flush=True)
    serve(app, sock)
    print(f"mobilenet serve: {config.name} stopped after draining its requests", file=sys.stderr)
    return 0


def _server_args(args: argparse.Namespace, backend: str) -> list[str]:
    """The ``mobilenet serve`` arguments for the model ``args`` describe on ``backend`` (the concrete one, so that
    ``auto`` cannot choose differently in the server)."""
    out = ["--checkpoint", args.checkpoint] if args.checkpoint else [args.model, "--alpha", str(args.alpha),
                                                                     "--num-classes", str(args.num_classes)]
    if args.checkpoint is None and args.weights:
        out += ["--weights", args.weights]
    if args.checkpoint is None and args.resolution:
        out += ["--resolution", str(args.resolution)]
    out += ["--backend", backend, "--max-batch", str(args.max_batch), "--max-delay-ms", str(args.max_delay_ms),
            "--max-queue", str(args.max_queue)]
    out += ["--threads", str(args.threads)] if args.threads else []
    return out + (["--name", args.name] if args.name else [])


def run_bench_serve(args: argparse.Namespace) -> int:
    from ..serve.load import bench_serve, goals

    runner = _runner(args)
    levels, status = bench_serve(runner, _server_args(args, runner.backend), args.concurrency, args.requests,
                                 args.time_limit, args.max_batch, args.name)
    met = goals(levels, args.max_delay_ms)
    if args.json:
        print(json.dumps({
            "model": runner.info.name, "backend": runner.backend, "note": runner.note, "server_exit": status,
            "levels": [{"concurrency": lv.concurrency, "ok": lv.ok, "failures": lv.failures,
                        "images_per_s": lv.images_per_s, "p50_ms": lv.percentile(50) * 1e3,
                        "p99_ms": lv.percentile(99) * 1e3, "mean_batch": lv.mean_batch,
                        "offline_batch": lv.offline.batch, "offline_images_per_s": lv.offline.images_per_s,
                        "offline_latency_ms": lv.offline.latency_s * 1e3, "ratio": lv.ratio,
                        "server_model_ms": lv.model_s * 1e3, "server_request_ms": lv.server_s * 1e3,
                        "first_error": lv.first_error} for lv in levels],
            "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in met]}))
        return 0
    import torch

    print(f"{runner.info.name} on {runner.backend} ({runner.note}), {torch.get_num_threads()} threads; max batch "
          f"{args.max_batch}, max delay {args.max_delay_ms:g} ms; single-image requests, binary FP32 tensors")
    _print_levels(levels)
    for goal, measured, ok in met:
        print(f"{'met' if ok else 'MISSED':>6}  {goal}: {measured}")
    print(f"server exit status after SIGTERM: {status}")
    return 0


def _print_levels(levels) -> None:
    """The bench-serve table; 'model ms' is a model call in the server, 'server ms' a request from its body read
    to its response built, 'offline ms' a call of the same batch size in a tight loop."""
    print(f"{'clients':>7} {'ok':>6} {'failed':>6} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} "
          f"{'model ms':>9} {'server ms':>9} {'offline ms':>10} {'offline img/s':>13} {'served/offline':>14}")
    for lv in levels:
        print(f"{lv.concurrency:>7} {lv.ok:>6} {lv.failures:>6} {lv.images_per_s:>8.1f} "
              f"{lv.percentile(50) * 1e3:>8.2f} {lv.percentile(99) * 1e3:>8.2f} {lv.mean_batch:>10.1f} "
              f"{lv.model_s * 1e3:>9.2f} {lv.server_s * 1e3:>9.2f} "
              f"{f'{lv.offline.latency_s * 1e3:.2f} ({lv.offline.batch})':>10} {lv.offline.images_per_s:>13.1f} "
              f"{lv.ratio:>14.0%}")
        if lv.first_error:
            print(f"        first failure: {lv.first_error}")
