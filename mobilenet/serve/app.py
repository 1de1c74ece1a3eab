"""The HTTP server: Open Inference Protocol routes over a dynamic batcher, on Starlette and uvicorn.

Routes (KServe v2 REST; every ``/v2/models/{name}`` route also answers under ``/versions/1``):

==========================================  ==================================================================
``GET /v2/health/live``, ``/v2/health/ready``  server liveness and readiness
``GET /v2``                                  server metadata (name, version, extensions)
``GET /v2/models/{name}``                    model metadata: inputs, outputs, α, resolution, normalisation, labels
``GET /v2/models/{name}/ready``              model readiness
``POST /v2/models/{name}/infer``             inference (:mod:`mobilenet.serve.protocol`)
``GET /metrics``                             Prometheus metrics (:mod:`mobilenet.serve.metrics`)
==========================================  ==================================================================

Every error is ``{"error": "..."}`` with a 4xx status (503 and Retry-After for a full queue); the server keeps
answering after any of them. On SIGTERM or SIGINT it stops accepting connections, finishes the requests in flight
and returns normally.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import MobileNetError
from .batcher import DynamicBatcher
from .metrics import Metrics
from .protocol import HEADER_LENGTH, ProtocolError, decode_images, encode_response, model_metadata, parse_infer

_INLINE_JSON = 64 * 1024  # JSON bodies larger than this are parsed off the event loop


@dataclass
class ServeConfig:
    """How the server batches and what it accepts.

    Attributes:
        name: the model name clients use in URLs (default in the CLI: the model's registered name).
        max_batch: the most images in one model call, and in one request.
        max_delay_ms: how long a request may wait for others to join its batch.
        max_queue: requests that may wait for a batch; one more gets 503 with Retry-After.
        max_body_mb: the largest request body accepted (413 above it).
    """

    name: str
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 256
    max_body_mb: float = 16.0


class _Service:
    """The state behind the routes: the runner, its batcher, the metrics."""

    def __init__(self, runner, config: ServeConfig):
        self.runner, self.info, self.config = runner, runner.info, config
        self.metrics = Metrics(config.name)
        self.batcher = DynamicBatcher(self._run, config.max_batch, config.max_delay_ms / 1000, config.max_queue,
                                      on_batch=self.metrics.observe_batch, on_queue=self.metrics.queue_depth.set)
        self.ready = False

    def _run(self, images: np.ndarray) -> np.ndarray:
        out = self.runner(images)
        return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out, dtype=np.float32)

    def check_model(self, request: Request) -> None:
        name, version = request.path_params["model"], request.path_params.get("version", "1")
        if name != self.config.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {self.config.name!r}", 404)
        if version != "1":
            raise ProtocolError(f"model {name!r} has version 1 only, not {version!r}", 404)

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def server_ready(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 400)

    async def server_metadata(self, request: Request) -> Response:
        from .. import __version__
        return JSONResponse({"name": "mobilenet", "version": __version__,
                             "extensions": ["classification", "binary_tensor_data"]})

    async def model_metadata(self, request: Request) -> Response:
        self.check_model(request)
        c = self.config
        extra = {"backend": self.runner.backend, "max_batch": c.max_batch, "max_delay_ms": c.max_delay_ms}
        return JSONResponse(model_metadata(c.name, self.info, extra))

    async def model_ready(self, request: Request) -> Response:
        self.check_model(request)
        return JSONResponse({"name": self.config.name, "ready": self.ready},
                            status_code=200 if self.ready else 400)

    async def infer(self, request: Request) -> Response:
        self.check_model(request)
        start = time.perf_counter()
        body = await _read_body(request, int(self.config.max_body_mb * 2**20))
        header_length = request.headers.get(HEADER_LENGTH)
        args = (body, header_length, self.info, self.config.max_batch)
        with self.metrics.in_flight.track_inprogress():
            inline = header_length is not None or len(body) <= _INLINE_JSON  # raw tensors parse in microseconds
            req = parse_infer(*args) if inline else await run_in_threadpool(parse_infer, *args)
            batch = req.batch if req.batch is not None else await run_in_threadpool(decode_images, req.images,
                                                                                      self.info)
            logits = await self.batcher.infer(batch)
        content, headers = encode_response(self.config.name, req, logits, self.info.class_names)
        self.metrics.latency.observe(time.perf_counter() - start)
        media = "application/octet-stream" if HEADER_LENGTH in headers else "application/json"
        return Response(content, media_type=media, headers=headers)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ProtocolError(f"the request body ({declared} bytes) is over the {limit}-byte limit (--max-body-mb)",
                            413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the request body is over the {limit}-byte limit (--max-body-mb)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _protocol_error(request: Request, exc: ProtocolError) -> Response:
    return _error(exc.status, str(exc), exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, exc.detail or "error", exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


class _CountRequests:
    """ASGI middleware: counts every HTTP answer by route and status code."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("endpoint"), "__name__", "other")
            self.metrics.requests.labels(endpoint, str(status)).inc()


def create_app(runner, config: ServeConfig) -> Starlette:
    """The Starlette application serving ``runner`` (a :class:`~mobilenet.deploy.backends.Runner`, or any callable
    from a (B, C, H, W) float32 batch to logits with ``info`` and ``backend`` attributes)."""
    svc = _Service(runner, config)
    model = "/v2/models/{model}"
    routes = [Route("/v2/health/live", svc.live), Route("/v2/health/ready", svc.server_ready),
              Route("/v2", svc.server_metadata), Route("/metrics", svc.metrics_text)]
    for prefix in (model, model + "/versions/{version}"):
        routes += [Route(prefix, svc.model_metadata), Route(prefix + "/ready", svc.model_ready),
                   Route(prefix + "/infer", svc.infer, methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        svc.batcher.start()
        svc.ready = True
        try:
            yield
        finally:
            svc.ready = False
            await svc.batcher.stop()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_CountRequests, metrics=svc.metrics)],
                    exception_handlers={ProtocolError: _protocol_error, HTTPException: _http_error,
                                        Exception: _server_error})
    app.state.service = svc
    return app


def warm_up(runner, max_batch: int) -> None:
    """Runs the backend on batch sizes 1, 2 and ``max_batch`` so that compilation and allocation happen before the
    first client waits (torch.compile compiles per shape, then once for a dynamic batch axis)."""
    info = runner.info
    for n in sorted({1, min(2, max_batch), max_batch}):
        runner(np.zeros((n, info.in_chans, info.resolution, info.resolution), np.float32))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port; read it from ``getsockname()``).

    Raises:
        MobileNetError: the address is taken or cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must say TCP: asyncio turns Nagle's algorithm off only on sockets that do, and with it on, a
        # response written in two parts waits for the client's delayed ACK (40 ms on Linux).
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise MobileNetError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def serve(app: Starlette, sock: socket.socket, drain_seconds: float = 30.0) -> None:
    """Serves ``app`` on ``sock`` until SIGTERM or SIGINT, then drains requests in flight (up to
    ``drain_seconds``) and returns."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=drain_seconds)
    server = uvicorn.Server(config)
    with _drain_on_signals():
        server.run(sockets=[sock])


@contextlib.contextmanager
def _drain_on_signals():
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, drain, shut down) and afterwards raises the signal
    # again under the handlers it found; with these no-op handlers that second delivery ends nothing, so a drained
    # server returns normally and the process exits 0.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
