"""deploy/kubernetes/: every manifest is valid for the pinned Kubernetes version's schemas (offline,
``kubernetes-validate``), and the references between them hold: selectors match labels, Services
target real container ports, HPAs and PDBs target existing Deployments, probes hit real routes, the
HPA's custom metric is one flashvl exports (and the adapter rule makes), settings are real settings
with valid values, and the gateway's ``openai:`` specs name the stage Services and models."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashvl.config import Settings

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"  # the schemas the manifests are checked against (kubernetes-validate ships them)
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # not in Kubernetes' own schemas: checked below
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _docs(*paths: Path) -> list[dict[str, Any]]:
    docs = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


CPU = sorted(KUBE.glob("*.yaml"))
GPU = sorted((KUBE / "gpu").glob("*.yaml"))
ALL = _docs(*CPU, *GPU)


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/Exists) against labels."""
    if not _matches(selector.get("matchLabels") or {}, labels):
        return False
    for expr in selector.get("matchExpressions") or []:
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


@pytest.mark.parametrize("doc", ALL, ids=lambda d: f"{d['__file__']}:{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_for_the_pinned_kubernetes(doc: dict[str, Any]) -> None:
    body = {k: v for k, v in doc.items() if k != "__file__"}
    if (doc["apiVersion"], doc["kind"]) in CRDS:
        pytest.skip("a prometheus-operator CRD: checked by test_service_monitor_scrapes_flashvl")
    kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    assert doc["metadata"].get("namespace", "flashvl") in ("flashvl", "monitoring") or doc["kind"] == "Namespace"


def test_cpu_set_has_every_part() -> None:
    docs = _docs(*CPU)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for role in ("gateway", "vision", "language"):
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert (kind, f"flashvl-{role}") in names, (kind, role)
    for kind, name in [
        ("Deployment", "flashvl-redis"),
        ("Service", "flashvl-redis"),
        ("Secret", "flashvl-auth"),
        ("ConfigMap", "flashvl-settings"),
        ("ServiceMonitor", "flashvl"),
        ("ConfigMap", "prometheus-adapter-flashvl"),
    ]:
        assert (kind, name) in names
    assert _kind(docs, "NetworkPolicy")


@pytest.mark.parametrize(
    "docs", [_docs(*CPU), _docs(*[p for p in CPU if p.name != "vision.yaml"], *GPU)], ids=["cpu", "gpu"]
)
def test_references_hold(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _kind(docs, "Deployment")}
    pods = {name: d["spec"]["template"] for name, d in deployments.items()}
    for name, deployment in deployments.items():
        assert _selects(deployment["spec"]["selector"], pods[name]["metadata"]["labels"]), name

    # Services: select pods of exactly one Deployment, on a port name those pods declare.
    for service in _kind(docs, "Service"):
        chosen = [n for n, pod in pods.items() if _matches(service["spec"]["selector"], pod["metadata"]["labels"])]
        assert len(chosen) == 1, (service["metadata"]["name"], chosen)
        ports = {p["name"] for c in pods[chosen[0]]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)

    # HPAs and PDBs: an existing Deployment; PDBs select its pods.
    for hpa in _kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, target
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for pdb in _kind(docs, "PodDisruptionBudget"):
        assert any(_selects(pdb["spec"]["selector"], pod["metadata"]["labels"]) for pod in pods.values())

    # NetworkPolicies: each selects pods that exist, and names ports they declare.
    for policy in _kind(docs, "NetworkPolicy"):
        selected = [p for p in pods.values() if _selects(policy["spec"]["podSelector"], p["metadata"]["labels"])]
        assert selected, policy["metadata"]["name"]
        declared = {p["name"] for pod in selected for c in pod["spec"]["containers"] for p in c["ports"]}
        for rule in policy["spec"]["ingress"]:
            assert all(port["port"] in declared for port in rule["ports"]), policy["metadata"]["name"]
            for peer in rule.get("from", []):
                if "podSelector" in peer:
                    assert any(_selects(peer["podSelector"], p["metadata"]["labels"]) for p in pods.values())

    # Every ConfigMap / Secret a pod names exists and has the keys it names.
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in _kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) | d.get("data", {}) for d in _kind(docs, "Secret")}
    for pod in pods.values():
        for container in pod["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in maps
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], ref
        for volume in pod["spec"].get("volumes", []):
            if "secret" in volume:
                keys = secrets[volume["secret"]["secretName"]]
                assert all(item["key"] in keys for item in volume["secret"].get("items", []))
            if "persistentVolumeClaim" in volume:
                claims = {d["metadata"]["name"] for d in _kind(docs, "PersistentVolumeClaim")}
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def _flashvl_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]
        for d in _kind(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "flashvl"
    }


def test_flashvl_pods_run_the_image_non_root_with_real_probes_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from flashvl.api.app import create_app
    from flashvl.api.stage_app import create_stage_app
    from flashvl.cli import _parser
    from flashvl.config import settings_from_args

    docs = ALL
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in _kind(docs, "ConfigMap")}

    from fastapi.testclient import TestClient

    # Without ``with``, the app's lifespan (loading models) does not run: a route that exists answers
    # something other than 404 (here a 500 or a 503: no state yet); a missing one answers 404.
    apps = {
        "all": TestClient(create_app(Settings()), raise_server_exceptions=False),
        "vision": TestClient(create_stage_app(Settings(), "vision"), raise_server_exceptions=False),
        "language": TestClient(create_stage_app(Settings(), "language"), raise_server_exceptions=False),
    }
    assert apps["all"].get("/no-such-path").status_code == 404
    pods = _flashvl_pods(docs)
    assert len(pods) == 3  # gateway, vision, language (the GPU vision reuses the vision name)
    for d in _kind(docs, "Deployment"):
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") != "flashvl":
            continue
        pod = d["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
        (container,) = pod["spec"]["containers"]
        assert container["image"].split(":")[-1] == VERSION
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/flashvl"} <= mounts  # the only paths flashvl writes
        args = container["args"]
        assert args[0] == "serve"
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env |= maps[source["configMapRef"]["name"]]
        env |= {e["name"]: e.get("value", "secret") for e in container.get("env", [])}
        for name in env:
            assert name.startswith("FLASHVL_") and name.removeprefix("FLASHVL_").lower() in Settings.model_fields, name
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        parsed, unknown = _parser().parse_known_args(args)
        assert not unknown, unknown
        settings = settings_from_args(parsed)  # every value valid, as the pod would load it
        for name in env:
            monkeypatch.delenv(name)
        client = apps[settings.only]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                check = container[probe]["httpGet"]
                assert client.get(check["path"]).status_code != 404, (d["metadata"]["name"], probe)
                assert check["port"] in {p["name"] for p in container["ports"]}
        assert {p["containerPort"] for p in container["ports"]} == {settings.port}
        if settings.only == "all":  # the gateway: its stages are the stage Services, by openai: spec
            services = {s["metadata"]["name"]: s for s in _kind(docs, "Service")}
            for role, spec in (("vision", settings.vision), ("language", settings.language)):
                assert spec == f"openai:http://flashvl-{role}.flashvl.svc:8080/v1#flashvl-{role}"
                assert {p["port"] for p in services[f"flashvl-{role}"]["spec"]["ports"]} == {8080}
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            assert settings.vision.startswith("glm4v:")
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["spec"]["tolerations"])


def _exported_metric_names() -> set[str]:
    from flashvl.observability import Metrics
    from flashvl.pipeline.admission import ModelGate, ModelQueueCollector

    metrics = Metrics()
    metrics.registry.register(ModelQueueCollector(lambda: ModelGate(1, 1, 1.0)))
    return {family.name for family in metrics.registry.collect()}


def test_hpa_metric_is_flashvls_own_and_the_adapter_makes_it() -> None:
    exported = _exported_metric_names()
    adapter = next(d for d in ALL if d["metadata"]["name"] == "prometheus-adapter-flashvl")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    made = {rule["name"]["as"] for rule in rules}
    for rule in rules:
        series = rule["seriesQuery"].split("{")[0].strip("'\"")
        assert series in exported, series
    for hpa in _kind(ALL, "HorizontalPodAutoscaler"):
        names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
        assert names, hpa["metadata"]["name"]
        assert names <= exported and names <= made, names
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


def test_service_monitor_scrapes_flashvl() -> None:
    (monitor,) = _kind(ALL, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    selected = [
        s for s in _kind(_docs(*CPU), "Service") if _matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in selected} == {"flashvl-gateway", "flashvl-vision", "flashvl-language"}
    for endpoint in spec["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
