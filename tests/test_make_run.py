"""`make run`'s launcher: starts NATS, PostgreSQL and every service (five) that answers /healthz and /readyz, stops
cleanly on Ctrl-C, and a second start reuses the data. Ctrl-C is delivered as a terminal delivers it, to the
whole process group, once or twice: nothing is left running, no port stays open. After a crash (kill -9 of
the launcher) the next start stops the leftovers and comes up. Nothing it prints carries a password.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from agentry_dev.stack import SERVICES, dev_token, free_port


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
    cmd = [sys.executable, "-m", "agentry_dev", "run", "--data", str(data), "--gateway-port", str(base),
           "--nats-port", str(nats_port), "--pg-port", str(pg_port)]  # fmt: skip
    # Its own process group, as `make run` has in a terminal: Ctrl-C there signals the whole group.
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait_ready_line(proc: subprocess.Popen[str], timeout: float = 120, seen: list[str] | None = None) -> list[str]:
    """Read the launcher's output (in a thread, so the deadline holds) until its ready banner; the thread keeps
    appending what follows to `seen`."""
    lines: queue.Queue[str | None] = queue.Queue()
    seen = [] if seen is None else seen

    def pump() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
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
            threading.Thread(target=_drain, args=(lines, seen), daemon=True).start()
            return seen
    raise AssertionError(f"stack not ready (exit code {proc.poll()}):\n" + "".join(seen[-60:]))


def _drain(lines: queue.Queue[str | None], seen: list[str]) -> None:
    while (line := lines.get()) is not None:
        seen.append(line)


def _stack_processes(proc: subprocess.Popen[str], data: Path) -> list[psutil.Process]:
    """The launcher, everything it started, and the PostgreSQL server (pg_ctl detaches it from the launcher)."""
    launcher = psutil.Process(proc.pid)
    procs = [launcher, *launcher.children(recursive=True)]
    postmaster = psutil.Process(int((data / "pg" / "postmaster.pid").read_text().split()[0]))
    procs += [postmaster, *postmaster.children(recursive=True)]
    names = " ".join(" ".join(p.cmdline()) for p in procs)
    assert "nats-server" in names and "postgres" in names and names.count("uvicorn") == len(SERVICES), names
    return procs


def _ctrl_c(proc: subprocess.Popen[str], times: int) -> int:
    """Ctrl-C as a terminal sends it, to the whole process group; `times` > 1 adds more while it stops."""
    os.killpg(proc.pid, signal.SIGINT)
    for _ in range(times - 1):
        time.sleep(0.3)  # the launcher is stopping its children now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=120)


def _assert_nothing_left(procs: list[psutil.Process], ports: list[int], data: Path) -> None:
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after Ctrl-C"
    assert not (data / "stack.json").exists(), "the launcher did not record that it stopped everything"


def _passwords(data: Path) -> list[str]:
    return list(json.loads((data / "nats" / "credentials.json").read_text()).values())


Check = Callable[[subprocess.Popen[str], int], None]


def _start_stop_cycles(data: Path, ctrl_cs: list[int], while_up: list[Check] | None = None) -> None:
    """Start `make run`'s launcher once per entry of `ctrl_cs`, run the matching `while_up` check (given the
    launcher and the gateway's port), Ctrl-C it that many times: each time, nothing is left behind."""
    base, nats_port, pg_port = _free_block(), free_port(), free_port()
    ports = [*range(base, base + len(SERVICES)), nats_port, pg_port]
    for i, times in enumerate(ctrl_cs):
        proc = _start(data, base, nats_port, pg_port)
        output: list[str] = []
        try:
            _wait_ready_line(proc, seen=output)
            procs = _stack_processes(proc, data)
            if while_up and i < len(while_up):
                while_up[i](proc, base)
        finally:
            code = _ctrl_c(proc, times)
        assert code == 0, "".join(output[-40:])
        _assert_nothing_left(procs, ports, data)
        printed = "".join(output)
        assert f"[stack] NATS nats://127.0.0.1:{nats_port} " in output[0], output[0]
        assert not [p for p in _passwords(data) if p in printed], "make run printed a NATS password"


def test_run_starts_every_service_healthy_one_ctrl_c_stops_all_and_a_restart_reuses_data(tmp_path: Path) -> None:
    """Ctrl-C to the process group once, then twice (the second while it stops): nothing left either time."""
    auth = {"Authorization": f"Bearer {dev_token('make-run-user')}"}

    def healthy_and_writes(_: subprocess.Popen[str], base: int) -> None:
        for port in range(base, base + len(SERVICES)):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"nats": True, "postgres": True}
        r = httpx.post(f"http://127.0.0.1:{base}/api/workspaces", json={"name": "kept"}, headers=auth)
        assert r.status_code == 201

    def kept_and_not_shared(first: subprocess.Popen[str], base: int) -> None:
        workspaces = httpx.get(f"http://127.0.0.1:{base}/api/workspaces", headers=auth).json()["workspaces"]
        assert [w["name"] for w in workspaces] == ["kept"]
        # a second launcher on the same data folder is refused, and told what to do
        second = _start(tmp_path, _free_block(), free_port(), free_port())
        out, _ = second.communicate(timeout=60)
        assert second.returncode != 0
        assert f"is in use by another `make run` (pid {first.pid})" in out and f"kill {first.pid}" in out, out
        assert httpx.get(f"http://127.0.0.1:{base}/readyz").status_code == 200, "the first one is untouched"

    _start_stop_cycles(tmp_path, [1, 2], [healthy_and_writes, kept_and_not_shared])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ten_start_stop_cycles_in_a_row_leave_no_process_and_no_port(tmp_path: Path) -> None:
    """`make test-ctrl-c`. Single and repeated Ctrl-Cs, ten starts in a row on the same data folder."""
    _start_stop_cycles(tmp_path, [1, 2, 3, 1, 2, 1, 3, 2, 1, 2])


def test_a_start_after_the_launcher_was_killed_stops_the_leftovers_and_comes_up(tmp_path: Path) -> None:
    base, nats_port, pg_port = _free_block(), free_port(), free_port()
    ports = [*range(base, base + len(SERVICES)), nats_port, pg_port]
    crashed = _start(tmp_path, base, nats_port, pg_port)
    try:
        _wait_ready_line(crashed)
        left = _stack_processes(crashed, tmp_path)[1:]  # all but the launcher
    finally:
        crashed.kill()  # kill -9: nothing is stopped
        crashed.wait(10)
    assert all(p.is_running() for p in left), "its children outlive a killed launcher (own sessions)"

    proc = _start(tmp_path, base, nats_port, pg_port)
    output: list[str] = []
    try:
        _wait_ready_line(proc, seen=output)
        procs = _stack_processes(proc, tmp_path)
        assert "ended without stopping what it started; stopping its leftovers: nats-server" in "".join(output)
        _, alive = psutil.wait_procs(left, timeout=5)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        code = _ctrl_c(proc, 1)
    assert code == 0, "".join(output[-40:])
    _assert_nothing_left(procs, ports, tmp_path)


def test_servers_a_launcher_left_without_a_record_are_found_by_their_folder_and_stopped(tmp_path: Path) -> None:
    """A launcher that died before recording its children (or one from before the record existed) still
    leaves PostgreSQL and NATS findable: by `<data>/pg/postmaster.pid` and `<data>/nats/nats.conf`."""
    from agentry_dev.stack import Nats, Postgres
    from agentry_dev.stack_state import StackState

    nats_server = Nats(tmp_path / "nats", free_port())
    postgres = Postgres(tmp_path / "pg", free_port(), fast=True)
    nats_server.start()
    postgres.start()
    assert nats_server.proc is not None and postgres.pid is not None
    left = [psutil.Process(nats_server.proc.pid), psutil.Process(postgres.pid)]
    try:
        StackState(tmp_path).claim()
        _, alive = psutil.wait_procs(left, timeout=5)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        postgres.stop()
        nats_server.stop()
        StackState(tmp_path).release()
