"""`make run`'s launcher: starts NATS, PostgreSQL and every service (five) that answer /healthz and /readyz, stops
cleanly on Ctrl-C, and a second start reuses the data."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from agentry_common.stack import SERVICES, dev_token, free_port


def _free_block(size: int = len(SERVICES)) -> int:
    for _ in range(200):
        base = free_port()
        ports_free = True
        for port in range(base, base + size):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ports_free = False
                    break
        if ports_free:
            return base
    raise RuntimeError("no block of free ports")


def _start(data: Path, base: int, nats_port: int, pg_port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL")}
    cmd = [sys.executable, "-m", "agentry_common.stack", "run", "--data", str(data), "--gateway-port", str(base),
           "--nats-port", str(nats_port), "--pg-port", str(pg_port)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_ready_line(proc: subprocess.Popen[str], timeout: float = 120) -> list[str]:
    """Read the launcher's output (in a thread, so the deadline holds) until its ready banner."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if "Ctrl-C stops everything" in line:
            return seen
    raise AssertionError(f"stack not ready (exit code {proc.poll()}):\n" + "".join(seen[-60:]))


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=60)


def test_run_starts_every_service_healthy_stops_cleanly_and_reuses_data(tmp_path: Path) -> None:
    base, nats_port, pg_port = _free_block(), free_port(), free_port()
    auth = {"Authorization": f"Bearer {dev_token('make-run-user')}"}
    proc = _start(tmp_path, base, nats_port, pg_port)
    try:
        lines = _wait_ready_line(proc)
        assert any(f"gateway listening on http://127.0.0.1:{base}" in line for line in lines)
        for port in range(base, base + len(SERVICES)):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"nats": True, "postgres": True}
        r = httpx.post(f"http://127.0.0.1:{base}/api/workspaces", json={"name": "kept"}, headers=auth)
        assert r.status_code == 201
    finally:
        code = _stop(proc)
    assert code == 0
    for port in range(base, base + len(SERVICES)):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"

    proc = _start(tmp_path, base, nats_port, pg_port)
    try:
        _wait_ready_line(proc)
        names = [
            w["name"] for w in httpx.get(f"http://127.0.0.1:{base}/api/workspaces", headers=auth).json()["workspaces"]
        ]
        assert names == ["kept"]
    finally:
        _stop(proc)
