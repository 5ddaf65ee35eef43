"""Write the NATS users of deploy/ from the one permission table (agentry_dev.bus_permissions).

`python -m tools.nats_users` rewrites the `users` of deploy/nats/values.yaml (the Helm release) and of
deploy/k8s/overlays/dev/nats.yaml (the dev overlay's nats.conf); tests/test_nats_permissions.py fails while
either differs from the table, so a new subject is added in bus_permissions.py and this is run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from agentry_dev.bus_permissions import SERVICE_PERMISSIONS, permissions

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "deploy" / "nats" / "values.yaml"
DEV = ROOT / "deploy" / "k8s" / "overlays" / "dev" / "nats.yaml"


def _var(service: str) -> str:
    return f"$NATS_{service.upper()}_PASSWORD"


def helm_users(indent: str) -> str:
    lines = []
    for service in SERVICE_PERMISSIONS:
        perms = permissions(service)
        lines += [f"{indent}- user: {service}", f"{indent}  password: << {_var(service)} >>", f"{indent}  permissions:"]
        for direction in ("publish", "subscribe"):
            lines += [f"{indent}    {direction}:", f"{indent}      allow:"]
            lines += [f'{indent}        - "{subject}"' for subject in perms[direction]]  # type: ignore[literal-required]
            if direction == "publish" and perms["deny_publish"]:
                lines.append(f"{indent}      deny:")
                lines += [f'{indent}        - "{subject}"' for subject in perms["deny_publish"]]
        if perms["allow_responses"]:
            lines.append(f"{indent}    allow_responses: true")
    return "\n".join(lines) + "\n"


def dev_users(indent: str) -> str:
    lines = []
    for service in SERVICE_PERMISSIONS:
        perms = permissions(service)
        publish, subscribe = json.dumps(perms["publish"]), json.dumps(perms["subscribe"])
        deny = f", deny: {json.dumps(perms['deny_publish'])}" if perms["deny_publish"] else ""
        block = f"publish: {{allow: {publish}{deny}}}, subscribe: {{allow: {subscribe}}}"
        if perms["allow_responses"]:
            block += ", allow_responses: true"
        lines.append(f"{indent}{{user: {service}, password: {_var(service)}, permissions: {{{block}}}}}")
    return "\n".join(lines) + "\n"


def main() -> None:
    helm = HELM.read_text()
    match = re.search(r"^( *)users:\n((?:\1  .*\n)+)", helm, re.M)
    assert match, "no users: block in the Helm values"
    helm = helm[: match.start(2)] + helm_users(match.group(1) + "  ") + helm[match.end(2) :]
    HELM.write_text(helm)
    dev = DEV.read_text()
    match = re.search(r"^( *)users: \[\n((?:\1  \{user: .*\n)+)", dev, re.M)
    assert match, "no users: [...] block in the dev nats.conf"
    dev = dev[: match.start(2)] + dev_users(match.group(1) + "  ") + dev[match.end(2) :]
    DEV.write_text(dev)


if __name__ == "__main__":
    main()
