"""deploy/k8s/, checked without a cluster: every manifest against the Kubernetes API schemas that
kubernetes-validate ships (strict: an unknown field fails), then what the schemas cannot see: probes,
ports, selectors, references between the objects, the settings the pod gets and the files it mounts."""

from __future__ import annotations

import base64
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from services.lmstudio.hosts import load_hosts_file
from services.mcp import load_mcp_config
from tests.contract.test_compose import compose_cmd, setting_names
from tests.helpers import REPO

K8S = REPO / "deploy" / "k8s"
MANIFESTS = ("configmap.yaml", "secret.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
# the oldest release the manifests support (the preStop `sleep` action is on by default from 1.30) and the
# newest whose schemas kubernetes-validate ships
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
POD_NAME = "lmstudio-bridge-5d8f7c9b6-x2k4q"
PLACEHOLDER = "CHANGE-ME"
IMAGE_UID = 10001  # the Dockerfile's `useradd --uid`


def load(name: str) -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if doc is not None]
    assert len(docs) == 1, f"{name}: one object a file"
    return dict(docs[0])


def deployment() -> dict[str, Any]:
    return load("deployment.yaml")


def pod_spec(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict((doc or deployment())["spec"]["template"]["spec"])


def container(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = pod_spec(doc)["containers"]
    assert [c["name"] for c in containers] == ["gateway"]
    return dict(containers[0])


def env_of(doc: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The container's env entries by name (a name set twice fails)."""
    entries = container(doc)["env"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"an env name is set twice: {names}"
    return {entry["name"]: dict(entry) for entry in entries}


def unknown_env_names(doc: dict[str, Any]) -> set[str]:
    """Env names of the container that app/settings.py does not read (OTEL_* are the SDK's)."""
    return {name for name in env_of(doc) if name not in setting_names() and not name.startswith("OTEL_")}


def secret_data() -> dict[str, str]:
    secret = load("secret.yaml")
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return data | dict(secret.get("stringData", {}))


def container_port(port: int | str) -> int:
    """A probe's or the Service's `port`/`targetPort` (a number or a container port's name) as a number."""
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return ports[port] if isinstance(port, str) else port


def sleep_s(doc: dict[str, Any]) -> int:
    """The preStop sleep, 0 without one."""
    return int(container(doc).get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))


# --- the schemas ---------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = load("kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk == set(MANIFESTS), "a manifest on disk that kustomize does not apply (or the other way)"
    # the image: kustomize's `images` entry names the Deployment's image, tagged with this release
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    name, _, tag = container()["image"].rpartition(":")
    [image] = kustomization["images"]
    assert image["name"] == name == "lmstudio-bridge"
    assert tag == image["newTag"] == version


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(name: str, version: str) -> None:
    doc = load(name)
    assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_the_validator_rejects_a_misspelt_field() -> None:
    broken = deployment()
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["paht"] = probe.pop("path")
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    assert "'paht' was unexpected" in caught.value.message
    where = ["spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet"]
    assert list(caught.value.absolute_path) == where
    # only the strict schemas catch it: the check must stay strict
    assert kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=False) == "1.37"  # the newest
    wrong_type = deployment()
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type 'integer'"):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[0], strict=True)


# --- what the schemas cannot see -------------------------------------------------------------------------


def test_probes_ports_and_command() -> None:
    gateway = container()
    env = env_of()
    port = int(env["BRIDGE_PORT"]["value"])
    assert [(p["name"], p["containerPort"]) for p in gateway["ports"]] == [("http", port)] == [("http", 8000)]
    assert env["BRIDGE_HOST"]["value"] == "0.0.0.0"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container_port(gateway[probe]["httpGet"]["port"]) == port, probe
    # the start-up probe gives a replica a minute (migrations, waiting for another replica's lock)
    startup = gateway["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert gateway["command"] == compose_cmd() == ["lmstudio-bridge", "serve"]
    assert int(deployment()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]) == port


def test_service_selects_the_pods_on_the_container_port() -> None:
    service, doc = load("service.yaml"), deployment()
    pod_labels = doc["spec"]["template"]["metadata"]["labels"]
    assert doc["spec"]["selector"]["matchLabels"] == pod_labels
    assert service["spec"]["selector"] == pod_labels
    [port] = service["spec"]["ports"]
    assert container_port(port["targetPort"]) == int(env_of()["BRIDGE_PORT"]["value"])
    assert service["spec"]["type"] == "ClusterIP"
    # any replica answers for any run (cancels and approvals reach the executing one through the store)
    assert service["spec"].get("sessionAffinity", "None") == "None" and "sessionAffinityConfig" not in service["spec"]


def test_hpa_and_pdb_target_the_deployment() -> None:
    doc, hpa, pdb = deployment(), load("hpa.yaml"), load("pdb.yaml")
    assert doc["spec"]["replicas"] >= 2
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", doc["metadata"]["name"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert 2 <= hpa["spec"]["minReplicas"] <= doc["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert "cpu" in container()["resources"]["requests"], "CPU utilisation is relative to the request"
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == doc["spec"]["template"]["metadata"]["labels"]
    assert doc["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_env_name_is_a_setting() -> None:
    assert not unknown_env_names(deployment()), "deployment.yaml sets variables app/settings.py does not read"
    misspelt = deployment()
    misspelt["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "BRIDGE_PROT", "value": "8000"})
    assert unknown_env_names(misspelt) == {"BRIDGE_PROT"}
    # Docker-link variables are off: a Service named `lmstudio` would otherwise set LMSTUDIO_PORT=tcp://...
    assert pod_spec()["enableServiceLinks"] is False and "LMSTUDIO_PORT" in setting_names()


def test_references_name_keys_that_exist() -> None:
    secret, configmap = load("secret.yaml"), load("configmap.yaml")
    sources = {
        "secret": (secret["metadata"]["name"], set(secret_data())),
        "configMap": (configmap["metadata"]["name"], set(configmap["data"])),
    }
    used: dict[str, set[str]] = {"secret": set(), "configMap": set()}
    for name, entry in env_of().items():
        for kind, ref_field in (("secret", "secretKeyRef"), ("configMap", "configMapKeyRef")):
            ref = entry.get("valueFrom", {}).get(ref_field)
            if ref is not None:
                assert ref["name"] == sources[kind][0], name
                assert ref["key"] in sources[kind][1], f"{name}: no key {ref['key']!r} in the {kind}"
                assert not ref.get("optional", False), f"{name}: a missing key must stop the pod, not go unnoticed"
                used[kind].add(ref["key"])
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for volume in volumes.values():
        for kind, ref_name in (("secret", "secretName"), ("configMap", "name")):
            if kind in volume:
                assert volume[kind][ref_name] == sources[kind][0], volume["name"]
                keys = [item["key"] for item in volume[kind]["items"]]
                assert set(keys) <= sources[kind][1], f"{volume['name']}: {keys}"
                used[kind].update(keys)
    # every key is used; every volume is mounted, every mount has a volume
    assert used["secret"] == sources["secret"][1]
    assert used["configMap"] == sources["configMap"][1]
    mounts = [m["name"] for m in container()["volumeMounts"]]
    assert sorted(mounts) == sorted(volumes)


def test_secrets_are_in_the_secret_and_are_placeholders() -> None:
    env = env_of()
    for name in ("BRIDGE_API_KEYS", "BRIDGE_DATABASE_URL"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"], name
    assert "LMSTUDIO_API_TOKEN" not in env, "LM Studio tokens live in the hosts file of the Secret"
    data = secret_data()
    assert all(PLACEHOLDER in value for value in data.values()), "secret.yaml must hold placeholders only"
    assert data["BRIDGE_DATABASE_URL"].startswith("postgresql+asyncpg://"), "several replicas share PostgreSQL"
    hosts = yaml.safe_load(data["lmstudio-hosts.yaml"])["hosts"]
    assert all(PLACEHOLDER in host["token"] for host in hosts), "every host's token is a placeholder"


def test_configmap_mcp_json_is_the_reference_config(tmp_path: Path) -> None:
    text = load("configmap.yaml")["data"]["mcp.json"]
    assert json.loads(text) == json.loads((REPO / "deploy" / "mcp.json").read_text(encoding="utf-8"))
    (tmp_path / "mcp.json").write_text(text, encoding="utf-8")
    servers = load_mcp_config(tmp_path / "mcp.json", {})
    assert list(servers) == ["time"] and servers["time"].command == "python"


def test_graceful_shutdown_and_instance_id() -> None:
    doc, env = deployment(), env_of()
    grace_s = float(env["BRIDGE_SHUTDOWN_GRACE_S"]["value"])
    assert grace_s == Settings.model_fields["shutdown_grace_s"].default == 20.0
    # SIGTERM comes after preStop; then the grace, then the store's flush and closing: 10 s at least for those
    assert pod_spec(doc)["terminationGracePeriodSeconds"] >= sleep_s(doc) + grace_s + 10
    assert sleep_s(doc) > 0
    assert env["BRIDGE_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert float(env["BRIDGE_LEASE_S"]["value"]) == Settings.model_fields["lease_s"].default


def test_pod_runs_non_root_on_a_read_only_root_filesystem() -> None:
    spec, gateway = pod_spec(), container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == IMAGE_UID
    assert f"--uid {IMAGE_UID} " in (REPO / "Dockerfile").read_text(encoding="utf-8")
    context = gateway["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = {m["mountPath"] for m in gateway["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    assert {"/tmp", "/home/bridge"} <= writable
    assert spec["automountServiceAccountToken"] is False


# --- the pod's environment, as the gateway reads it ---------------------------------------------------------


def materialise(doc: dict[str, Any], root: Path) -> dict[str, Path]:
    """Write the files the container's volumes would hold under `root`; {mountPath: local directory}."""
    configmap, secret = load("configmap.yaml")["data"], secret_data()
    volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container(doc)["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = root / mount["mountPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        for kind, data in (("configMap", configmap), ("secret", secret)):
            for item in volume.get(kind, {}).get("items", []):
                (local / item["path"]).write_text(data[item["key"]], encoding="utf-8")
        mounts[mount["mountPath"]] = local
    return mounts


def pod_environment(doc: dict[str, Any], mounts: dict[str, Path]) -> dict[str, str]:
    """The container's env with the Secret, ConfigMap and downward API resolved, and paths in mounted
    volumes moved to their local copies."""
    secret, configmap = secret_data(), load("configmap.yaml")["data"]
    env: dict[str, str] = {}
    for name, entry in env_of(doc).items():
        source = entry.get("valueFrom", {})
        if "value" in entry:
            value = str(entry["value"])
        elif "secretKeyRef" in source:
            value = secret[source["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in source:
            value = configmap[source["configMapKeyRef"]["key"]]
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", name
            value = POD_NAME
        mount_path = next((m for m in sorted(mounts, key=len, reverse=True) if value.startswith(f"{m}/")), None)
        env[name] = value if mount_path is None else str(mounts[mount_path] / value.removeprefix(f"{mount_path}/"))
    return env


def test_pod_environment_is_a_valid_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = deployment()
    mounts = materialise(doc, tmp_path)
    env = pod_environment(doc, mounts)
    for name in [n for n in os.environ if n.upper() in setting_names()]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)

    assert settings.instance_id == POD_NAME
    assert (settings.host, settings.port) == ("0.0.0.0", container_port("http"))
    assert settings.database_url == secret_data()["BRIDGE_DATABASE_URL"]
    assert settings.require_auth and len(settings.api_keys) == 2
    assert settings.lease_s == 15.0 and settings.shutdown_grace_s == 20.0
    # the files the settings name are in the mounted volumes, and load
    assert settings.mcp_config is not None and Path(settings.mcp_config).parent == mounts["/config"]
    assert set(load_mcp_config(Path(settings.mcp_config), env)) == {"time"}
    assert settings.lmstudio_hosts_file is not None
    hosts_file = Path(settings.lmstudio_hosts_file)
    assert hosts_file.parent == mounts["/etc/lmstudio-bridge"]
    hosts = load_hosts_file(hosts_file)
    assert [(h.name, h.url, h.weight) for h in hosts] == [
        ("lmstudio-1", "http://lmstudio-1.example.internal:1234", 1.0),
        ("lmstudio-2", "http://lmstudio-2.example.internal:1234", 1.0),
    ]
    assert all(h.token and h.token.startswith(PLACEHOLDER) for h in hosts)
