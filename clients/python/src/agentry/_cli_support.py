"""The CLI's plumbing: where its settings come from (flags, environment, `agentry login`'s file), how it
prints (Rich tables for people, JSON for scripts) and how it ends (0 ok, 1 API error, 2 usage error)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from .client import Client
from .errors import AgentryError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentry" / "config.json"


def load_config() -> dict[str, str]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def save_config(values: dict[str, str]) -> Path:
    """Written readable by its owner only (it holds a token): created 600, never widened."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f, indent=2)
    path.chmod(0o600)
    return path


def usage_error(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def client(url: str | None = None, token: str | None = None, need_token: bool = True) -> Client:
    saved = load_config()
    url = url or os.environ.get("AGENTRY_URL") or saved.get("url")
    token = token or os.environ.get("AGENTRY_TOKEN") or saved.get("token")
    if need_token and not token:
        raise usage_error("not signed in: set AGENTRY_TOKEN or run `agentry login`")
    return Client(url, token=token or "")


@contextmanager
def api_errors() -> Iterator[None]:
    """An API error is shown with its message and code, and ends the command with exit status 1."""
    try:
        yield
    except AgentryError as problem:
        err.print(f"[red]error:[/red] {problem.message} [dim]({problem.code})[/dim]", highlight=False)
        raise typer.Exit(1) from None


def plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(plain(value), indent=2, default=str) + "\n")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def table(rows: Sequence[Any], columns: Sequence[str], title: str | None = None) -> None:
    grid = Table(title=title, header_style="bold")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        data = plain(row)
        grid.add_row(*(cell(data.get(c)) for c in columns))
    out.print(grid)


def show(value: Any, as_json: bool, columns: Sequence[str], title: str | None = None) -> None:
    """A list as a table, one object as a two-column table; `--json` prints it as JSON instead."""
    if as_json:
        print_json(value)
    elif isinstance(value, list):
        table(value, columns, title)
    else:
        data = plain(value)
        grid = Table(show_header=False, title=title)
        grid.add_column(style="bold")
        grid.add_column()
        for name in columns or list(data):
            grid.add_row(name, cell(data.get(name)))
        out.print(grid)


def money(cents: int, currency: str = "USD") -> str:
    return f"{cents / 100:,.2f} {currency}"


def read_input(value: str | None) -> str | dict[str, Any]:
    """The run's input: the argument, else stdin. A JSON object's text is sent as that object."""
    if value is None:
        if sys.stdin.isatty():
            raise usage_error("give the input as an argument or on stdin")
        value = sys.stdin.read()
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, dict) else value


def pairs(values: list[str] | None, what: str) -> dict[str, Any]:
    """`name=value` options; a value that is JSON (a number, true, an object) is sent as that."""
    found: dict[str, Any] = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise usage_error(f"{what} takes name=value, not {item!r}")
        try:
            found[name] = json.loads(raw)
        except ValueError:
            found[name] = raw
    return found


app = typer.Typer(
    name="agentry", no_args_is_help=True, pretty_exceptions_enable=False, help="Agentry from the terminal."
)
Json = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
Key = Annotated[str | None, typer.Option("--key", envvar="AGENTRY_API_KEY", help="The endpoint's aek_ key.")]
InputArg = Annotated[
    str | None, typer.Argument(help="The input; stdin when absent. A JSON object's text is sent as that object.")
]
Set = Annotated[list[str] | None, typer.Option("--set", help="Any field as name=value (JSON values allowed).")]


class State:
    url: str | None = None
    token: str | None = None


def owner() -> Client:
    return client(State.url, State.token)


@app.callback()
def main_options(
    url: Annotated[str | None, typer.Option("--url", help="The gateway (default AGENTRY_URL).")] = None,
    token: Annotated[str | None, typer.Option("--token", help="An owner's JWT (default AGENTRY_TOKEN).")] = None,
) -> None:
    State.url, State.token = url, token
