"""ASGI layers around the app: who may call it (:class:`RequestGuard`), one log line per request (:class:`AccessLog`).

**RequestGuard** refuses, before any route runs:

* a ``Host`` that is not served (400): by default only loopback names, which blocks DNS rebinding;
  a server bound to another address accepts the names given with ``--allowed-host`` (and the
  machine's own names and addresses);
* a state-changing request (POST...) from another origin, from an opaque one (``Origin: null``:
  sandboxed frames, ``file://`` pages) or marked ``Sec-Fetch-Site: cross-site`` (403);
* when an API token is set: any ``/api/`` request without it (401). The token travels as
  ``Authorization: Bearer <token>``; for the web page, opening ``/?token=<token>`` once stores a
  cookie (``HttpOnly``, ``SameSite=Strict``) that the page's own requests then carry.
  ``/healthz``, the page, its assets and the API docs stay open.

**AccessLog** is the outermost layer: every request gets exactly one line on the ``lggseg.serve``
logger (``method path status ms in out``, plus ``detail`` for a refusal), a client that goes away
is one line and never a traceback, and a refused POST closes its connection (``Connection:
close``) so that an unread body cannot keep it open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, RedirectResponse, Response

log = logging.getLogger("lggseg.serve")

TOKEN_COOKIE = "lggseg_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MIN_TOKEN_LENGTH = 16


def hostname(value: str) -> str | None:
    """The host part of a ``Host`` header (``[::1]:8000`` -> ``::1``), or None when malformed."""
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an API token (too short, spaces, non-ASCII), or None."""
    if len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the API token must be at least {MIN_TOKEN_LENGTH} characters; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if not token.isascii() or not token.isprintable() or any(ch.isspace() for ch in token):
        return "the API token must be printable ASCII without spaces"
    return None


def _cookie_value(token: str) -> str:
    return hashlib.sha256(b"lggseg-cookie:" + token.encode()).hexdigest()


def _cookies(headers: Headers) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            found.setdefault(name, value)
    return found


class RequestGuard:
    """ASGI middleware: unknown ``Host`` (400), cross-origin or opaque-origin POSTs (403), missing token (401)."""

    def __init__(self, app: Any, allowed_hosts: Sequence[str] | None, token: str | None = None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}
        self.token = token or None
        self._cookie = _cookie_value(token) if token else ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            response = self._check(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: dict[str, Any]) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed is not None and (hostname(host) or "") not in self.allowed:
            shown = ", ".join(sorted(self.allowed))
            return JSONResponse({"detail": f"host {host!r} is not served here (allowed: {shown})"}, status_code=400)
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin.strip().lower() == "null":
                return JSONResponse({"detail": "requests from an opaque origin (Origin: null) are refused"}, 403)
            if origin and urlsplit(origin).netloc.lower() != host.lower():
                return JSONResponse({"detail": "cross-origin requests are refused"}, status_code=403)
            if headers.get("sec-fetch-site", "").lower() == "cross-site":
                return JSONResponse({"detail": "cross-site requests are refused"}, status_code=403)
        if self.token is None:
            return None
        path = scope["path"]
        if path == "/" and b"token=" in scope.get("query_string", b""):
            offered = parse_qs(scope["query_string"].decode("latin-1")).get("token", [""])[0]
            if not hmac.compare_digest(offered.encode("utf-8", "replace"), self.token.encode()):
                return self._unauthorized("wrong API token in ?token=")
            page = RedirectResponse("/", status_code=303)
            page.set_cookie(TOKEN_COOKIE, self._cookie, httponly=True, samesite="strict", path="/")
            return page
        if path.startswith("/api/") and not self._authorized(headers):
            return self._unauthorized(
                "this server needs its API token: send 'Authorization: Bearer <token>' (in a browser, open "
                "/?token=<token> once)"
            )
        return None

    def _authorized(self, headers: Headers) -> bool:
        assert self.token is not None
        scheme, _, offered = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            offered.strip().encode("utf-8", "replace"), self.token.encode()
        ):
            return True
        cookie = _cookies(headers).get(TOKEN_COOKIE, "")
        return hmac.compare_digest(cookie.encode("utf-8", "replace"), self._cookie.encode())

    @staticmethod
    def _unauthorized(detail: str) -> Response:
        return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="lggseg"'})


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, (ClientDisconnect, ConnectionError)):
        return True
    return type(exc).__name__ in ("ClosedResourceError", "BrokenResourceError", "EndOfStream")


class AccessLog:
    """Outermost ASGI layer: one log line per request, disconnects as one line, refused POSTs close."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "in": 0, "out": 0, "body": b"", "gone": False}

        async def counted_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                seen["gone"] = True
            return message

        async def counted_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = status = int(message["status"])
                if status >= 400 and scope["method"] not in SAFE_METHODS:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                seen["out"] += len(body)
                if (seen["status"] or 0) >= 400 and len(seen["body"]) < 4096:
                    seen["body"] += body[:4096]
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, counted_receive, counted_send)
        except Exception as exc:  # the 500 answer was sent by Starlette; log it here, once
            failure = exc
        self._write(scope, seen, time.perf_counter() - began, failure)
        if failure is not None and seen["status"] is None and not _is_disconnect(failure):
            try:
                await JSONResponse({"detail": "internal error; see the server log"}, 500)(scope, receive, send)
            except Exception:  # the client is gone
                pass

    @staticmethod
    def _write(scope: dict[str, Any], seen: dict[str, Any], seconds: float, failure: BaseException | None) -> None:
        client = scope.get("client")
        line = (
            f"{scope['method']} {scope['path']} status={seen['status'] or '-'} ms={seconds * 1000:.0f} "
            f"in={seen['in']} out={seen['out']} client={client[0] if client else '-'}"
        )
        if failure is not None and _is_disconnect(failure) or (seen["gone"] and failure is not None):
            log.info("%s detail=%r", line, "client disconnected")
            return
        if failure is not None:
            log.error("%s error=%s", line, type(failure).__name__, exc_info=failure)
            return
        status = seen["status"] or 0
        if status >= 400:
            try:
                detail = json.loads(seen["body"].decode("utf-8", "replace")).get("detail", "")
            except (ValueError, AttributeError):
                detail = seen["body"][:200].decode("utf-8", "replace")
            level = logging.ERROR if status in (500, 507) else logging.INFO  # 503 busy is a normal refusal
            log.log(level, "%s detail=%r", line, str(detail)[:300])
        else:
            log.info(line)
