"""The launcher's hold on its data folder: what it started, and what a launcher that died left behind.

`make run` starts NATS, PostgreSQL and the services in sessions of their own (a terminal's Ctrl-C reaches the
launcher only, which stops them in order). So when the launcher itself dies without stopping them (kill -9,
an OOM kill, a closed laptop), they keep running, holding the ports and the data folder, and the next
`make run` would fail on PostgreSQL's "lock file already exists" or a busy port. The launcher records each
child (pid and start time, so a reused pid is never mistaken for ours) in `<data>/stack.json`; the next one
reads it, stops what is still running, and says so. A launcher that is alive keeps its folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from pathlib import Path

import psutil

STATE_FILE = "stack.json"


def _identity(proc: psutil.Process) -> dict[str, float | int]:
    return {"pid": proc.pid, "created": proc.create_time()}


def _alive(entry: dict[str, float | int]) -> psutil.Process | None:
    """The process `entry` names, if it still runs (same pid, same start time)."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        if abs(proc.create_time() - float(entry["created"])) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, KeyError, ValueError):
        return None
    return proc


def terminate(procs: list[psutil.Process], timeout: float = 10) -> None:
    """SIGTERM each (and its children), wait up to `timeout`, then SIGKILL what is left."""
    everyone: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            everyone += [proc, *proc.children(recursive=True)]
    for proc in everyone:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(everyone, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


class StackState:
    def __init__(self, data_dir: Path):
        self.path = data_dir / STATE_FILE
        self.children: dict[str, dict[str, float | int]] = {}

    def claim(self) -> None:
        """Take the folder for this launcher: refuse it while another live launcher holds it; stop whatever a
        dead one left running."""
        state = self._load()
        if state:
            owner = _alive(state.get("launcher", {}))
            if owner is not None and owner.pid != os.getpid():
                raise SystemExit(
                    f"[stack] {self.path.parent} is in use by another `make run` (pid {owner.pid}). Stop it first "
                    f"(Ctrl-C in its terminal, or `kill {owner.pid}`), or give this one its own --data folder."
                )
            left = {name: proc for name, entry in state.get("children", {}).items() if (proc := _alive(entry))}
            if left:
                named = ", ".join(f"{name} (pid {proc.pid})" for name, proc in left.items())
                print(
                    f"[stack] a previous `make run` (pid {state.get('launcher', {}).get('pid')}) ended without "
                    f"stopping what it started; stopping its leftovers: {named}",
                    flush=True,
                )
                terminate(list(left.values()))
        self._stop_unrecorded()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._save({"launcher": _identity(psutil.Process()), "children": {}})

    def _stop_unrecorded(self) -> None:
        """Servers on this folder that no state file names (a launcher that died before it wrote one): the
        PostgreSQL server of `<data>/pg` and the nats-server of `<data>/nats/nats.conf`, found by their paths."""
        data = self.path.parent
        pg = postmaster(data / "pg")
        if pg is not None:
            where = data / "pg"
            print(f"[stack] a PostgreSQL (pid {pg.pid}) of an earlier run runs on {where}; stopping it", flush=True)
            with contextlib.suppress(psutil.Error):
                pg.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown (SIGTERM would wait for its clients)
            _, alive = psutil.wait_procs([pg], timeout=30)
            if alive:
                terminate(alive)
        conf = str(data / "nats" / "nats.conf")
        for proc in psutil.process_iter(["cmdline"]):
            if conf in (proc.info["cmdline"] or []) and proc.pid != os.getpid():
                print(f"[stack] a nats-server (pid {proc.pid}) of an earlier run uses {conf}; stopping it", flush=True)
                terminate([proc])

    def record(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.children[name] = _identity(psutil.Process(pid))
            self._save({"launcher": _identity(psutil.Process()), "children": self.children})

    def release(self) -> None:
        """Everything this launcher started has stopped: nothing left for the next one to clean up."""
        self.path.unlink(missing_ok=True)

    def _load(self) -> dict[str, dict]:  # type: ignore[type-arg]
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self, state: dict[str, object]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)


def postmaster(data_dir: Path) -> psutil.Process | None:
    """The PostgreSQL server running on `data_dir`, if any: `postmaster.pid` names it, and a live process of
    that pid is ours only if it is a postgres started on this folder (pids are reused)."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        if "postgres" in proc.name() and str(data_dir) in " ".join(proc.cmdline()):
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def kill_postmaster(data_dir: Path) -> None:
    """Last resort when `pg_ctl stop` did not stop it: SIGKILL the postmaster and its backends."""
    proc = postmaster(data_dir)
    if proc is not None:
        with contextlib.suppress(psutil.Error):
            children = proc.children(recursive=True)
            for p in (proc, *children):
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGKILL)
            psutil.wait_procs([proc, *children], timeout=5)


def check_ports(ports: dict[int, str]) -> None:
    """Fail before starting anything if a port is taken, naming the port, its option and who holds it."""
    for port, option in ports.items():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no owner
            try:
                s.bind(("127.0.0.1", port))
                continue
            except OSError:
                pass
        raise SystemExit(f"[stack] port {port} is in use{_holder(port)}; stop that program or choose another {option}")


def _holder(port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({' '.join(proc.cmdline())[:120]})"
    return ""


class Shutdown:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP, from the launcher's start to its end: the first one stops the stack,
    later ones are absorbed. A terminal sends SIGINT to its whole foreground process group — make, uv and
    the launcher — and `uv run` may pass one on, so a single Ctrl-C can arrive twice, and an impatient second
    one must not cut the shutdown short and leave servers running. During startup the first signal raises
    KeyboardInterrupt (to leave whatever wait is in progress); once the stack runs it sets `requested`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.raising = True
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Shutdown:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested.is_set():
            with contextlib.suppress(OSError):  # os.write: print() is not reentrant, a handler may interrupt it
                os.write(2, b"[stack] already stopping: everything is being stopped, please wait\n")
            return
        self.requested.set()
        if self.raising:
            self.raising = False
            raise KeyboardInterrupt
