"""The development stack: NATS, PostgreSQL, migrations, and the five services, each its own process.

`make run` (`agentry_dev.cli`) and the test fixtures (`agentry_dev.testing`) both use it. The servers
(`servers.py`) are skipped when `NATS_URL` / `DATABASE_URL` point elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from agentry_common.migrate import migrate_all
from agentry_common.subjects import SERVICES
from agentry_gateway.settings import DEV_JWT_SECRET

from .servers import Nats, Postgres, free_port
from .stack_state import StackState

# What the fixtures, tools and benchmarks take from here, wherever it is defined.
__all__ = ["DEFAULT_PORTS", "SERVICES", "Nats", "Postgres", "Service", "Stack", "dev_token", "free_port"]

DEFAULT_PORTS = {"gateway": 8080, "runner": 8081, "billing": 8082, "keys": 8083, "webhooks": 8084}


def _pump(stream: IO[bytes], prefix: str, sink: IO[str] | None, log_file: IO[bytes] | None) -> None:
    for line in iter(stream.readline, b""):
        if log_file is not None:
            log_file.write(line)
            log_file.flush()
        if sink is not None:
            sink.write(f"{prefix} {line.decode(errors='replace').rstrip()}\n")
            sink.flush()


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path | None = None
    echo: bool = True
    proc: subprocess.Popen[bytes] | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _terminated: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "uvicorn", f"agentry_{self.name}.entrypoints.api:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--log-level", "warning", "--loop", "uvloop", "--http", "agentry_common.protocol:HttpToolsProtocol",
            # The gateway reads X-Forwarded-For itself, from TRUSTED_PROXIES only; uvicorn's own handling
            # would believe it from any loopback peer and rewrite the client address before we see it.
            "--no-proxy-headers",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        prefix = f"[{self.name}:{self.port}]"
        assert self.proc.stdout is not None
        t = threading.Thread(
            target=_pump, args=(self.proc.stdout, prefix, sys.stdout if self.echo else None, log_file), daemon=True
        )
        t.start()
        self._threads.append(t)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s")

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM, once: the service drains; `stop` waits for it)."""
        if self.proc and self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            self.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._terminated = False
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()


@dataclass
class Stack:
    """NATS + PostgreSQL + services. `data_dir` holds server data and service logs."""

    data_dir: Path
    nats_port: int = 4222
    pg_port: int = 55432
    fast_pg: bool = False
    echo: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    nats: Nats | None = None
    postgres: Postgres | None = None
    services: list[Service] = field(default_factory=list)
    primary: dict[str, Service] = field(default_factory=dict)
    state: StackState | None = None  # `make run`: what it started, for the next run should this one die

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.nats_url = os.environ.get("NATS_URL", "")
        self.database_url = os.environ.get("DATABASE_URL", "")

    def start_servers(self) -> None:
        if not self.nats_url:
            self.nats = Nats(self.data_dir / "nats", self.nats_port)
            self.nats.start()
            self.nats_url = self.nats.url
            if self.state and self.nats.proc:
                self.state.record("nats-server", self.nats.proc.pid)
        if not self.database_url:
            self.postgres = Postgres(self.data_dir / "pg", self.pg_port, fast=self.fast_pg)
            self.postgres.start()
            self.database_url = self.postgres.url
            if self.state and (pid := self.postgres.pid):
                self.state.record("postgres", pid)

    def migrate(self) -> None:
        migrate_all(self.database_url)

    def create_database(self, prefix: str) -> str:
        """A new, empty database on the stack's PostgreSQL (named `<prefix>_<random>`): its URL."""
        import uuid

        import psycopg

        base = self.database_url.rsplit("/", 1)[0]
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{base}/{name}"

    def env(self, service: str | None = None, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL")}
        creds = self.nats.credentials(service) if self.nats and service else None
        if creds is not None:
            env.update(NATS_USER=creds[0], NATS_PASSWORD=creds[1])
        env.update(
            # A service gets the bare URL and its own user; without a service name, the admin URL.
            NATS_URL=self.nats.bare_url if creds is not None and self.nats else self.nats_url,
            DATABASE_URL=self.database_url,
            ENVIRONMENT=env.get("ENVIRONMENT", "development"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(overrides)
        if "NATS_URL" in overrides and "NATS_USER" not in overrides:
            env.pop("NATS_USER", None)  # another server, chosen by the caller along with its credentials
            env.pop("NATS_PASSWORD", None)
        return env

    def start_service(self, name: str, port: int | None = None, wait: bool = True, **env: str) -> Service:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        svc = Service(name, port, self.env(name, **env), log_path=logs / f"{name}-{port}.log", echo=self.echo)
        svc.start()
        self.services.append(svc)
        if self.state and svc.proc:
            self.state.record(f"{name}:{port}", svc.proc.pid)
        if wait:
            svc.wait_ready()
        return svc

    def service(self, name: str) -> Service:
        """The primary process of a service (the one the `stack` fixture or `make run` started)."""
        if name in self.primary:
            return self.primary[name]
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        """Services first (all asked at once, so they drain together), then PostgreSQL and NATS; each step is
        bounded and ends in SIGKILL, and one that fails does not keep the others running."""
        for svc in self.services:
            svc.terminate()
        steps: list[Callable[[], None]] = [svc.stop for svc in reversed(self.services)]
        steps += [self.postgres.stop] if self.postgres else []
        steps += [self.nats.stop] if self.nats else []
        for step in steps:
            try:
                step()
            except Exception as err:  # keep stopping the rest, then say what went wrong
                print(f"[stack] while stopping: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        self.services = [s for s in self.services if s.proc and s.proc.poll() is None]  # none, normally

    def still_running(self) -> list[str]:
        """What `stop` could not stop (nothing, normally)."""
        left = [f"{s.name} (pid {s.proc.pid})" for s in self.services if s.proc and s.proc.poll() is None]
        if self.nats and self.nats.proc and self.nats.proc.poll() is None:
            left.append(f"nats-server (pid {self.nats.proc.pid})")
        if self.postgres and (pid := self.postgres.pid):
            left.append(f"postgres (pid {pid})")
        return left


def dev_token(sub: str = "dev-user", role: str | None = None, secret: str | None = None) -> str:
    import jwt

    claims: dict[str, object] = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 30 * 24 * 3600}
    if role:
        claims["role"] = role
    return jwt.encode(claims, secret or os.environ.get("JWT_SECRET", DEV_JWT_SECRET), algorithm="HS256")
