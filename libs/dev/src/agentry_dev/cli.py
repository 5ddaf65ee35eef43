"""`make run`, `make token` and friends: the development stack from the command line.

python -m agentry_dev run [--data .data] [--gateway-port 8080] [--nats-port 4222] [--pg-port 55432]
python -m agentry_dev token [--sub dev-user] [--role admin]
python -m agentry_dev migrate                   every service's migrations against DATABASE_URL
python -m agentry_dev revision SERVICE MESSAGE  autogenerate a migration on a throwaway database
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from agentry_common.db import autogenerate
from agentry_common.migrate import migrations_dir
from agentry_common.subjects import SERVICES

from .servers import Postgres, free_port
from .stack import DEFAULT_PORTS, Stack, dev_token
from .stack_state import Shutdown, StackState, check_ports


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
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("DATABASE_URL", None)  # the throwaway server's, never a configured one
        postgres = Postgres(Path(tmp) / "pg", free_port(), fast=True)
        postgres.start()
        try:
            autogenerate(migrations_dir(service), postgres.url, message)
        finally:
            postgres.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentry_dev", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
