"""Attacks on connections, over real sockets against the server ``lggseg serve`` runs (in a thread).

Idle sockets, half-sent headers, trickled headers, stalled and slow uploads, aborted uploads:
none may deny ``/healthz`` or a real segmentation, and each is closed within its deadline.
Deadlines are shortened to a second or less so the whole file runs in a few seconds.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from lggseg.serve.app import create_app  # noqa: E402
from lggseg.serve.limits import ServerLimits  # noqa: E402
from tests.serve.conftest import (  # noqa: E402
    closed_by_server,
    connect,
    multipart,
    multipart_head,
    read_response,
    request_bytes,
    running_server,
)

FAST = {"header_timeout": 1.0, "keep_alive_timeout": 0.5, "body_idle_timeout": 1.0, "body_timeout": 3.0}
# Stalled uploads that must stay stalled (holding their upload place) while the test opens 125
# connections and segments a slice: a 1 s idle deadline would drop the first before the last is
# admitted on a slow 2-core machine.
PATIENT_BODY = {**FAST, "body_idle_timeout": 10.0, "body_timeout": 20.0}


@pytest.fixture(scope="module")
def slice_bytes(sample_patient: Path) -> bytes:
    return (sample_patient / f"{sample_patient.name}_12.tif").read_bytes()


@pytest.fixture()
def server(
    request: pytest.FixtureRequest, shipped_segmenter: Any, tmp_path: Path
) -> Iterator[tuple[Any, tuple[str, int]]]:
    timeouts = getattr(request, "param", FAST)  # FAST, or the timeouts a test passes (indirect parametrize)
    limits = ServerLimits(temp_dir=str(tmp_path), workers=1, queue=1, **timeouts)  # type: ignore[arg-type]
    app = create_app(limits=limits, segmenter=shipped_segmenter)
    with running_server(app, limits) as address:
        yield app, address
    assert list(tmp_path.iterdir()) == [], "request folders left behind"


def get(address: tuple[str, int], path: str = "/healthz", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    with connect(address, timeout) as sock:
        sock.sendall(request_bytes("GET", path))
        return read_response(sock, timeout)


def post_files(address: tuple[str, int], files: list[tuple[str, bytes]], timeout: float = 60.0) -> tuple[int, Any]:
    body, content_type = multipart(files)
    with connect(address, timeout) as sock:
        sock.sendall(request_bytes("POST", "/api/v1/segment?images=false", body, {"Content-Type": content_type}))
        status, _, answer = read_response(sock, timeout)
    return status, json.loads(answer)


def stalled_upload(address: tuple[str, int], sent: int = 12) -> socket.socket:
    """Headers of a 100 kB upload plus the first ``sent`` bytes of its body, then nothing."""
    sock = connect(address)
    head = multipart_head("stall", "a.tif")
    sock.sendall(
        request_bytes(
            "POST", "/api/v1/segment", headers={"Content-Type": "multipart/form-data; boundary=stall"}
        ).replace(b"Content-Length: 0", b"Content-Length: 100000")
        + head[:sent]
    )
    return sock


@pytest.mark.parametrize("server", [PATIENT_BODY], indirect=True)
def test_idle_half_sent_and_stalled_connections_never_deny_health_or_segmentation(
    server: tuple[Any, tuple[str, int]], slice_bytes: bytes
) -> None:
    app, address = server
    began = time.monotonic()
    idle = [connect(address) for _ in range(48)]
    half = [connect(address) for _ in range(60)]
    for sock in half:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    stalled = [stalled_upload(address) for _ in range(17)]
    try:
        status, _, body = get(address)
        assert status == 200 and json.loads(body)["status"] == "ok"
        deadline = time.monotonic() + 5
        while app.state.service.gate.receiving < 17 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.service.gate.receiving == 17  # the stalled uploads hold no place in the work queue
        status, answer = post_files(address, [("a.tif", slice_bytes)])
        assert status == 200, answer
        assert answer["cases"][0]["shape"] == [1, 256, 256]
        assert time.monotonic() - began < FAST["header_timeout"] + 30
        for sock in idle + half:  # each closed by the request-head deadline
            assert closed_by_server(sock, within=FAST["header_timeout"] + 2)
        for sock in stalled:  # each answered 408 by the body deadline, then closed
            status, headers, body = read_response(sock, PATIENT_BODY["body_idle_timeout"] + 3)
            assert status == 408 and "stalled" in json.loads(body)["detail"]
            assert headers.get("connection") == "close" and closed_by_server(sock, within=2)
    finally:
        for sock in idle + half + stalled:
            sock.close()
    assert app.state.service.gate.receiving == 0 and app.state.service.gate.receiving_bytes == 0


def test_headers_trickled_a_byte_at_a_time_are_cut_at_the_deadline(server: tuple[Any, tuple[str, int]]) -> None:
    _, address = server
    with connect(address) as sock:
        began = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X" * 200:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, within=0.05):
                closed = True
                break
            assert time.monotonic() - began < FAST["header_timeout"] + 3
        assert closed and FAST["header_timeout"] - 0.2 <= time.monotonic() - began < FAST["header_timeout"] + 3


def test_keep_alive_connections_are_closed_when_idle(server: tuple[Any, tuple[str, int]]) -> None:
    _, address = server
    with connect(address) as sock:
        sock.sendall(request_bytes("GET", "/healthz"))
        assert read_response(sock)[0] == 200
        sock.sendall(request_bytes("GET", "/healthz"))  # the same connection serves a second request
        assert read_response(sock)[0] == 200
        began = time.monotonic()
        assert closed_by_server(sock, within=3)
        assert time.monotonic() - began < FAST["keep_alive_timeout"] + 1.5


def test_a_body_trickled_under_the_idle_deadline_is_cut_by_the_total_deadline(
    server: tuple[Any, tuple[str, int]],
) -> None:
    _, address = server
    with stalled_upload(address, sent=1000) as sock:  # the whole part head, then file bytes one by one
        began = time.monotonic()
        status = None
        while time.monotonic() - began < FAST["body_timeout"] + 3:
            try:
                sock.sendall(b"\0")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.3)
            try:
                status, _, body = read_response(sock, 0.3)
                break
            except TimeoutError:
                continue
        assert status == 408 and "too slow" in json.loads(body)["detail"]
        assert FAST["body_timeout"] - 0.3 <= time.monotonic() - began < FAST["body_timeout"] + 2


def test_the_oldest_idle_connections_make_room_when_too_many_are_open(
    shipped_segmenter: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = ServerLimits(temp_dir=str(tmp_path), max_connections=16, header_timeout=30.0)
    with running_server(create_app(limits=limits, segmenter=shipped_segmenter), limits) as address:
        caplog.set_level(logging.INFO, logger="lggseg.serve")
        socks = []
        for _ in range(40):
            socks.append(connect(address))
            time.sleep(0.005)  # the server sees them in order
        try:
            assert get(address)[0] == 200  # room is made for a real request, at once
            assert all(closed_by_server(s, within=2) for s in socks[:20])  # the oldest were closed first
            assert not any(closed_by_server(s, within=0.05) for s in socks[-8:])  # the newest are still open
        finally:
            for sock in socks:
                sock.close()
    evictions = [r.getMessage() for r in caplog.records if "idle the longest" in r.getMessage()]
    assert len(evictions) >= 20 and all(m.startswith("connection closed client=127.0.0.1") for m in evictions)


def test_aborted_uploads_log_one_line_and_no_traceback(
    server: tuple[Any, tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    app, address = server
    caplog.set_level(logging.INFO)
    for _ in range(3):
        sock = stalled_upload(address, sent=1000)
        sock.sendall(b"x" * 5000)
        time.sleep(0.1)
        sock.close()
    deadline = time.monotonic() + 5
    while app.state.service.gate.receiving and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    aborted = [r for r in caplog.records if "aborted by the client" in r.getMessage()]
    assert len(aborted) == 3
    assert all(r.getMessage().startswith("POST /api/v1/segment status=400") for r in aborted)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if "Exception in ASGI" in r.getMessage()]


def test_every_request_logs_one_access_line_and_refused_posts_close(
    server: tuple[Any, tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    _, address = server
    caplog.set_level(logging.INFO, logger="lggseg.serve")
    assert get(address)[0] == 200
    with connect(address) as sock:
        sock.sendall(request_bytes("POST", "/api/v1/segment", b"hello", {"Content-Type": "text/plain"}))
        status, headers, body = read_response(sock)
        assert status == 415 and headers["connection"] == "close" and closed_by_server(sock, within=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "lggseg.serve"]
    health = [line for line in lines if line.startswith("GET /healthz ")]
    refused = [line for line in lines if line.startswith("POST /api/v1/segment ")]
    assert len(health) == 1 and "status=200" in health[0] and " ms=" in health[0] and " out=" in health[0]
    assert len(refused) == 1 and "status=415" in refused[0] and "in=" in refused[0] and "multipart" in refused[0]


def test_a_body_sent_to_a_route_that_never_reads_it_cannot_hold_the_connection(
    server: tuple[Any, tuple[str, int]],
) -> None:
    _, address = server
    with connect(address) as sock:
        sock.sendall(request_bytes("GET", "/healthz", headers={"Content-Length": "1000000"}) + b"x" * 100)
        assert read_response(sock)[0] == 200
        began, closed = time.monotonic(), False
        while time.monotonic() - began < FAST["header_timeout"] + 3:  # keep trickling the unread body
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, within=0.1):
                closed = True
                break
        assert closed and time.monotonic() - began < FAST["header_timeout"] + 2


def test_uploads_in_flight_are_bounded_in_bytes_not_in_count(shipped_segmenter: Any, tmp_path: Path) -> None:
    limits = ServerLimits(temp_dir=str(tmp_path), max_receiving_bytes=100_000, **FAST)  # type: ignore[arg-type]
    app = create_app(limits=limits, segmenter=shipped_segmenter)
    with running_server(app, limits) as address:
        small = [stalled_upload(address, sent=1000) for _ in range(20)]  # many small stalled uploads: fine
        big = stalled_upload(address, sent=1000)
        big.sendall(b"\0" * 80_000)
        try:
            deadline = time.monotonic() + 5
            while app.state.service.gate.receiving_bytes < 80_000 and time.monotonic() < deadline:
                time.sleep(0.02)
            status, answer = post_files(address, [("a.png", b"\x89PNG" + b"\0" * 30_000)])
            assert status == 503 and "uploads in progress" in answer["detail"]
        finally:
            for sock in [*small, big]:
                sock.close()
        deadline = time.monotonic() + 5
        while app.state.service.gate.receiving and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.service.gate.receiving_bytes == 0
