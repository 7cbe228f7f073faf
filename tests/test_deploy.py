"""deploy/k8s: every manifest validates against a pinned Kubernetes schema (kubernetes-validate,
strict: unknown fields are errors), and the pieces fit together: selectors match pod labels,
probes hit the service's real routes, the ConfigMap holds settings the API starts with, the
Secret feeds the API, the kustomization lists every manifest. docker-compose's milvus profile
is checked the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"  # the oldest Kubernetes the manifests promise to run on
NOT_RESOURCES = {"kustomization.yaml", "milvus-values.yaml"}


def _resources() -> list[dict[str, Any]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name not in NOT_RESOURCES:
            out += [dict(d, _file=path.name) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [r for r in _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


@pytest.mark.parametrize(
    "resource", _resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_manifest_validates(resource: dict[str, Any]) -> None:
    body = {k: v for k, v in resource.items() if k != "_file"}
    kv.validate(body, KUBERNETES, strict=True)  # raises ValidationError with the path
    assert (
        resource["metadata"].get("namespace", "pemt") == "pemt" or resource["kind"] == "Namespace"
    )


def test_a_broken_manifest_is_caught() -> None:
    api = {k: v for k, v in _find("Deployment", "pemt-api").items() if k != "_file"}
    bad = yaml.safe_load(yaml.safe_dump(api))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(api))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES, strict=True)


def test_pieces_fit_together(monkeypatch: pytest.MonkeyPatch) -> None:
    files = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(files) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES
    )
    for name in ("pemt-api", "pemt-triton"):
        deploy = _find("Deployment", name)
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        for kind in ("Service", "PodDisruptionBudget"):
            res = _find(kind, name)
            sel = res["spec"]["selector"]
            sel = sel.get("matchLabels", sel)
            assert sel.items() <= labels.items(), (kind, name)
    hpa = _find("HorizontalPodAutoscaler", "pemt-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pemt-api" and hpa["spec"]["minReplicas"] >= 2

    triton = _find("Deployment", "pemt-triton")["spec"]["template"]
    c = triton["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 8002}

    api = _find("Deployment", "pemt-api")["spec"]["template"]["spec"]
    c = api["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    refs = {next(iter(r.values()))["name"] for r in c["envFrom"]}
    config, secret = _find("ConfigMap", "pemt-api"), _find("Secret", "pemt-api-keys")
    assert refs == {"pemt-api", "pemt-api-keys"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in api["volumes"]
    }
    assert claims[mounts[config["data"]["PEMT_MEDIA_DIR"]]] == "pemt-media"  # shared media
    host, port = config["data"]["PEMT_TRITON_URL"].split(":")
    assert host == "pemt-triton" and port == "8001"

    # the API starts with exactly these settings (a typo would stop it at start-up)
    from server.core.config import Settings

    for k, v in {**config["data"], **secret["stringData"]}.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.index_backend == "milvus" and s.milvus_index_params == {"M": 16, "efConstruction": 200}
    assert str(s.media_path) == "/media" and s.api_keys == ("change-me",)

    from server.main import create_app

    paths = set(create_app(s).openapi()["paths"])  # nothing starts: the lifespan does not run
    assert {"/readyz", "/healthz", "/metrics"} <= paths


def test_milvus_helm_values() -> None:
    values = yaml.safe_load((K8S / "milvus-values.yaml").read_text())
    assert values["cluster"]["enabled"] is True and values["service"]["port"] == 19530
    assert values["fullnameOverride"] == "milvus"
    config = _find("ConfigMap", "pemt-api")["data"]
    assert config["PEMT_MILVUS_URI"] == f"http://{values['fullnameOverride']}:19530"


def test_compose_milvus_profile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("etcd", "minio", "milvus", "api-milvus"):
        assert services[name]["profiles"] == ["milvus"], name
    api = services["api-milvus"]
    env = api["environment"]
    assert env["PEMT_INDEX_BACKEND"] == "milvus" and env["PEMT_MILVUS_URI"] == "http://milvus:19530"
    assert api["depends_on"]["milvus"]["condition"] == "service_healthy"
    milvus = services["milvus"]
    assert {"etcd", "minio"} <= set(milvus["depends_on"])
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert "standalone" in milvus["command"]
