"""The README's curl walk-through, pasted into bash against a running stack, runs without an error message.

The blocks are taken from README.md itself, so a walk-through that drifts from the API fails here. Only what
differs from `make run` is substituted: the gateway's URL and where the token comes from (the session's own
JWT for a fresh user, instead of `make token`).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("stack")

README = Path(__file__).resolve().parents[1] / "README.md"
GW_LINE = "GW=http://127.0.0.1:8080"
TOKEN_LINE = "TOKEN=$(make -s token SUB=alice)"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## Walk-through with curl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the README has no bash walk-through"
    return "\n".join(blocks)


def test_the_readme_walkthrough_runs_in_bash_without_an_error(gateway_url: str, make_auth: Any) -> None:
    script = walkthrough()
    assert "uuidgen" not in script and "/tmp/" not in script  # not on every machine; nothing written outside
    assert GW_LINE in script and TOKEN_LINE in script
    token = make_auth(f"readme-{uuid.uuid4().hex[:8]}")["Authorization"].removeprefix("Bearer ")
    script = script.replace(GW_LINE, f"GW={gateway_url}").replace(TOKEN_LINE, f"TOKEN={token}")

    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stderr == "", f"stderr:\n{done.stderr}\nstdout:\n{done.stdout}"
    out = done.stdout
    assert '"balance_cents"' in out and '"transactions"' in out and '"runs"' in out
    assert "event: done" in out  # the streaming run
    assert '"status":"succeeded"' in out.replace(" ", "")  # the async run, polled to its end
    assert '"api_key":"aek_' in out.replace(" ", "")  # the regenerated key, shown once to its owner


def test_the_readme_links_only_to_files_in_the_repository() -> None:
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (README.parent / target).exists(), target
    assert "../shared" not in text
