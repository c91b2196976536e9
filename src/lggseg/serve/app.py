"""HTTP API and web page: ``lggseg serve`` runs :func:`create_app` with uvicorn.

Endpoints (the OpenAPI page at ``/docs`` documents them, with the JSON schemas):

* ``GET /`` — the web page (``lggseg/serve/web/``): drop files, look through the slices, download.
* ``GET /healthz`` — model identity (SHA-256, architecture, post-processing), runtime, limits.
* ``POST /api/v1/segment`` — multipart field ``files``, one or more of:

  - slice images (TIFF, PNG, JPEG). Slices whose file names follow the data set's pattern
    ``<patient>_<n>.tif`` are grouped per patient (and per image size) into **one volume**:
    sorted by ``n``, normalised together and post-processed in 3D, exactly like a patient
    folder. A ``<patient>_<n>_mask.tif`` beside its image is taken as ground truth (Dice is
    reported). Any other slice is a case of its own, normalised with its own statistics.
  - a zip of a patient folder (or of several, kaggle_3m layout), read as ``lggseg predict``
    reads a folder (its own grid when all slices share a size); masks inside give a Dice.
  - a NIfTI volume (``.nii`` / ``.nii.gz``), read with lggseg's axis convention.

  The type of every file is decided by its content, never by its name. The JSON answer holds,
  per case, the tumor volume (voxels; mL too for NIfTI with a voxel size) and the number of
  slices with tumor, and per slice the tumor area (pixels) and the mask as a base64 PNG (plus
  the FLAIR image and an overlay with the outline, unless ``?images=false``).
* ``GET /api/v1/results/{id}/mask.nii.gz?case=K`` and ``GET /api/v1/results/{id}/mask.zip`` —
  the masks of a result as NIfTI (for a NIfTI input, with its affine and header) or as PNGs.
  Results are kept in a bounded in-memory LRU (``ServerLimits.max_results``); an evicted or
  unknown id answers 404.

Safety: the body size is checked while it is read; image dimensions are read from the header
before anything is decoded; zips are checked (entry count, total and per-entry ratio, ``..``,
absolute paths, links) before anything is extracted; uploads live only in a per-request
temporary folder that is removed when the request ends; at most ``workers`` requests are
processed at a time and at most ``queue`` more wait (others get 503). By default only loopback
``Host`` names are accepted and cross-site POSTs are refused. Every refusal is JSON
``{"detail": "..."}`` with a 4xx status (413 too large, 415 unsupported type, 400 malformed,
422 unreadable content, 404 unknown result, 503 busy).
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from lggseg.errors import LggsegError
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.serve.limits import ServerLimits
from lggseg.serve.routes import WEB_FILES, router, web_file
from lggseg.serve.service import Service
from lggseg.version import __version__

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""``Host`` names accepted by default (the server binds loopback; this blocks DNS rebinding)."""


def create_app(
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    limits: ServerLimits | None = None,
    *,
    segmenter: Segmenter | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """The FastAPI app. Loads the model once (or reuses ``segmenter``) and shares it.

    ``allowed_hosts``: ``Host`` names answered (None: any, for a server bound to a LAN address).
    """
    limits = limits or ServerLimits()
    segmenter = segmenter or Segmenter.from_weights(weights, inference)
    service = Service(segmenter, limits)
    for name in ["index.html", *WEB_FILES]:  # fail at start, not on the first page view
        web_file(name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.gate.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        title="lggseg",
        version=__version__,
        summary="Segment lower-grade glioma FLAIR abnormality in brain MRI slices and volumes.",
        description=(__doc__ or "").split("\n\n", 1)[0] + " Research use only; not for diagnosis.",
        docs_url=None,  # served by the router from local files: the default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    return app


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def _hostname(value: str) -> str | None:
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


class RequestGuard:
    """ASGI middleware: refuse unknown ``Host`` names (400) and cross-origin POSTs (403)."""

    def __init__(self, app: Any, allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: dict[str, Any]) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed is not None and (_hostname(host) or "") not in self.allowed:
            return 400, f"host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed))})"
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            if urlsplit(origin).netloc.lower() != host.lower():
                return 403, "cross-origin requests are refused"
        return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail early, with one clear line, when the address cannot be bound."""
    import socket

    if not 0 < port < 65536:
        raise LggsegError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LggsegError(f"cannot resolve --host {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise LggsegError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    limits: ServerLimits | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Load the model and run the app with uvicorn until interrupted."""
    import uvicorn

    limits = limits or ServerLimits()
    check_port_free(host, port)
    loopback = is_loopback(host)
    try:
        app = create_app(weights, inference, limits, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    except ImportError as exc:
        runtime = (inference or InferenceConfig()).runtime
        raise LggsegError(f"runtime {runtime!r} is not available ({exc})") from None
    if not loopback:
        log(f"warning: listening on {host}, reachable from other machines; the server has no authentication")
    shown = f"[{host}]" if ":" in host else host
    log(f"lggseg serving on http://{shown}:{port}/  (API docs at /docs; Ctrl+C to stop)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=limits.workers + limits.queue + 32,
    )
