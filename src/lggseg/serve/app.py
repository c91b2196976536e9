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

Safety (RELIABILITY.md lists each attack and the test that makes it): a connection must send
its request head within ``header_timeout`` and its body within the body deadlines, and idle
connections are closed first when too many are open (:mod:`lggseg.serve.transport`); the body
size is checked while it is read, and a request joins the work queue only once its body has
arrived; image dimensions and decoded sizes are read from the headers before anything is
decoded; zips are checked (entry count, total size and ratio, per-entry ratio, ``..``, absolute
paths, links) before anything is extracted; each request may ask for a bounded number of
slices and cases; uploads live only in a per-request temporary folder that is removed when the
request ends; at most ``workers`` requests are processed at a time and at most ``queue`` more
wait (others get 503); downloads are built on their own small gate. By default only loopback
``Host`` names are accepted; cross-site and ``Origin: null`` POSTs are refused; with a token
(``--token`` or ``LGGSEG_API_TOKEN``) every ``/api/`` request needs it
(:mod:`lggseg.serve.guard`). Every refusal is JSON ``{"detail": "..."}`` with a 4xx status
(400 malformed, 401 no token, 403 cross-site, 404 unknown result, 408 upload too slow, 413 too
large, 415 unsupported type, 422 unreadable content or bad parameter, 503 busy, 507 server disk
full). Each request logs one line (``lggseg.serve`` logger).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lggseg.errors import LggsegError
from lggseg.infer.segmenter import InferenceConfig, Segmenter
from lggseg.serve.guard import AccessLog, RequestGuard, token_problem
from lggseg.serve.limits import ServerLimits
from lggseg.serve.routes import WEB_FILES, router, web_file
from lggseg.serve.service import Service
from lggseg.version import __version__

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""``Host`` names accepted by default (the server binds loopback; this blocks DNS rebinding)."""

FREE_THREADS = 64
"""Helper threads kept for the page, ``/healthz`` and other blocking work beyond the requests that
wait for a worker or a download (each of those holds one)."""

TOKEN_ENV = "LGGSEG_API_TOKEN"
"""Environment variable read for the API token when ``--token`` is not given."""


class _LoggedFastAPI(FastAPI):
    """FastAPI whose outermost layer is :class:`~lggseg.serve.guard.AccessLog` (outside Starlette's error layer)."""

    def build_middleware_stack(self) -> Any:
        return AccessLog(super().build_middleware_stack())


def create_app(
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    limits: ServerLimits | None = None,
    *,
    segmenter: Segmenter | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    token: str | None = None,
) -> FastAPI:
    """The FastAPI app. Loads the model once (or reuses ``segmenter``) and shares it.

    ``allowed_hosts``: ``Host`` names answered (None: any). ``token``: when given, every ``/api/``
    request must carry it (``Authorization: Bearer``, or the cookie set by ``/?token=``).
    """
    limits = limits or ServerLimits()
    if token is not None and token_problem(token):
        raise LggsegError(str(token_problem(token)))
    segmenter = segmenter or Segmenter.from_weights(weights, inference)
    service = Service(segmenter, limits)
    for name in ["index.html", *WEB_FILES]:  # fail at start, not on the first page view
        web_file(name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # requests waiting for a worker or a download wait in helper threads: leave room for the others
        limiter = anyio.to_thread.current_default_thread_limiter()
        waiting = service.gate.capacity + service.downloads.capacity
        limiter.total_tokens = max(limiter.total_tokens, FREE_THREADS + waiting)
        yield
        service.gate.pool.shutdown(wait=False, cancel_futures=True)
        service.downloads.pool.shutdown(wait=False, cancel_futures=True)

    app = _LoggedFastAPI(
        lifespan=lifespan,
        title="lggseg",
        version=__version__,
        summary="Segment lower-grade glioma FLAIR abnormality in brain MRI slices and volumes.",
        description=(__doc__ or "").split("\n\n", 1)[0] + " Research use only; not for diagnosis.",
        docs_url=None,  # served by the router from local files: the default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts, token=token)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    return app


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


async def _invalid_parameters(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors as one documented string: ``query parameter 'case': ...``."""
    problems = []
    for error in getattr(exc, "errors", lambda: [])():
        where = [str(part) for part in error.get("loc", ())]
        place = f"{where[0]} parameter {'.'.join(where[1:])!r}" if len(where) > 1 else ".".join(where) or "request"
        problems.append(f"{place}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems) or "invalid request parameters"}, status_code=422)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """``Host`` names a server bound to ``host`` answers: loopback names, plus for other binds the
    bound address, the machine's names and addresses, and ``extra`` (``--allowed-host``).

    ``*`` in ``extra`` switches the check off (None).
    """
    if "*" in extra:
        return None
    names = set(LOOPBACK_HOSTS) | {h.lower().strip("[]") for h in extra if h.strip()}
    if is_loopback(host):
        return sorted(names)
    bare = host.strip("[]").lower()
    try:
        if not ipaddress.ip_address(bare).is_unspecified:
            names.add(bare)
    except ValueError:
        names.add(bare)  # a name
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.add(name.lower())
        try:
            names.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return sorted(n for n in names if n)


def check_port_free(host: str, port: int) -> None:
    """Fail early, with one clear line, when the address cannot be bound."""
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


def setup_logging() -> None:
    """One line per event on stderr: ``lggseg.serve`` at INFO, uvicorn at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name, level in (("lggseg.serve", logging.INFO), ("uvicorn", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    weights: str | Path | None = None,
    inference: InferenceConfig | None = None,
    limits: ServerLimits | None = None,
    log: Callable[[str], None] = print,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Load the model and run the app with uvicorn until interrupted.

    ``token``: the API token (default: the ``LGGSEG_API_TOKEN`` environment variable; none when
    both are unset). ``allowed_hosts``: extra ``Host`` names for a server bound beyond loopback
    (``*``: any).
    """
    from lggseg.serve.transport import build_server

    limits = limits or ServerLimits()
    token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and token_problem(token):
        raise LggsegError(str(token_problem(token)))
    check_port_free(host, port)
    loopback = is_loopback(host)
    names = host_names(host, allowed_hosts)
    try:
        app = create_app(weights, inference, limits, allowed_hosts=names, token=token)
    except ImportError as exc:
        runtime = (inference or InferenceConfig()).runtime
        raise LggsegError(f"runtime {runtime!r} is not available ({exc})") from None
    if not loopback:
        hosts = "any Host name" if names is None else "Host names " + ", ".join(names)
        log(f"warning: listening on {host}, reachable from other machines; answering {hosts}")
        if token is None:
            log(f"warning: no API token: anyone who reaches this address can use it (set --token or {TOKEN_ENV})")
    shown = f"[{host}]" if ":" in host else host
    log(f"lggseg serving on http://{shown}:{port}/  (API docs at /docs; Ctrl+C to stop)")
    if token is not None:
        log(f"API token required for /api/: in a browser open http://{shown}:{port}/?token=<your token> once")
    setup_logging()
    build_server(app, host, port, limits).run()
