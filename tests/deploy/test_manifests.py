"""The container image and Kubernetes manifests, checked as far as a machine without Docker or
Kubernetes can: the RayService against KubeRay's CRD, hadolint, yamllint, and the generated
RayService against serve_config.yaml."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import CRD, DEPLOY, ROOT

RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
BIN = Path(sys.executable).parent

_spec = importlib.util.spec_from_file_location("gen_rayservice", ROOT / "scripts/gen_rayservice.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is missing: pip install -e '.[dev]' installs it"
    return path


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pods(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server refuses them (kubectl's
    strict field validation): objects with properties and no additionalProperties."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def rayservice_validator() -> jsonschema.protocols.Validator:
    if not CRD.exists():
        pytest.skip(f"the KubeRay CRD is not at {CRD} (shared/ beside the checkout; CI has it)")
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1 MB
    (stored,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = _closed(stored["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.protocols.Validator, manifest: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(manifest)
    ]


def test_rayservice_file_is_the_one_generated_from_serve_config():
    check = subprocess.run(
        [sys.executable, "scripts/gen_rayservice.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    (manifest,) = _documents(RAYSERVICE)
    serve_config = (ROOT / "serve_config.yaml").read_text()
    assert manifest["spec"]["serveConfigV2"] == serve_config


def test_generated_fields_follow_serve_config():
    template = yaml.safe_load(gen.TEMPLATE.read_text())
    config = yaml.safe_load(gen.SERVE_CONFIG.read_text())
    config["http_options"]["port"] = 9000
    args = config["applications"][0]["args"]
    args.update(storage_root="/data/sessions", min_replicas=4, max_replicas=9)

    manifest = gen.render(template, yaml.safe_dump(config))

    for pod in _pods(manifest):
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert (mounts["sessions"], ports["serve"]) == ("/data/sessions", 9000)
        (volume,) = [v for v in pod["volumes"] if v["name"] == "sessions"]
        assert volume["persistentVolumeClaim"]["claimName"] == "sam2-serve-sessions"
    (gpu,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    # 0.33 GPU per replica: 3 replicas per one-GPU pod
    assert (gpu["minReplicas"], gpu["replicas"], gpu["maxReplicas"]) == (2, 2, 3)
    probe = gpu["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    assert probe == {"port": "serve", "path": "/health"}


def test_a_concept_detector_on_gpus_gets_gpu_workers_of_its_own():
    template = yaml.safe_load(gen.TEMPLATE.read_text())
    config = yaml.safe_load(gen.SERVE_CONFIG.read_text())
    args = config["applications"][0]["args"]
    args.update(min_replicas=2, max_replicas=6, detector={"score_threshold": 0.5})
    args.update(detector_num_gpus=0.5, detector_min_replicas=1, detector_max_replicas=3)
    manifest = gen.render(template, yaml.safe_dump(config))
    (gpu,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    # SAM 2: 1 to 2 one-GPU pods at 0.33; the detector: 1 to 2 more at 0.5
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (2, 4)


def test_generator_refuses_replicas_that_do_not_fit_a_gpu_worker():
    template = yaml.safe_load(gen.TEMPLATE.read_text())
    config = yaml.safe_load(gen.SERVE_CONFIG.read_text())
    config["applications"][0]["args"]["replica_num_cpus"] = 4  # 3 x 4 CPUs > 8
    with pytest.raises(gen.ConfigError, match=r"needs 12\.5 CPUs"):
        gen.render(template, yaml.safe_dump(config))


def test_rayservice_validates_against_the_kuberay_crd(rayservice_validator):
    (manifest,) = _documents(RAYSERVICE)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert _errors(rayservice_validator, manifest) == []


def test_crd_validation_refuses_a_misspelt_field(rayservice_validator):
    (manifest,) = _documents(RAYSERVICE)
    broken = copy.deepcopy(manifest)
    container = broken["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert any("volumeMount" in error for error in _errors(rayservice_validator, broken))


def test_every_ray_pod_mounts_the_shared_volume_at_storage_root():
    (manifest,) = _documents(RAYSERVICE)
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    storage_root = config["applications"][0]["args"]["storage_root"]
    (claim,) = _documents(DEPLOY / "kuberay" / "storage.yaml")
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for pod in _pods(manifest):
        (container,) = pod["containers"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounted = {m["mountPath"]: claims.get(m["name"]) for m in container["volumeMounts"]}
        assert mounted[storage_root] == claim["metadata"]["name"]


def test_redis_manifest_runs_aof_behind_the_host_of_redis_url():
    documents = {
        doc["kind"] + "/" + doc["metadata"]["name"]: doc
        for doc in _documents(DEPLOY / "kuberay" / "redis.yaml")
    }
    assert set(documents) == {"Service/redis", "Service/redis-headless", "StatefulSet/redis"}
    (container,) = documents["StatefulSet/redis"]["spec"]["template"]["spec"]["containers"]
    flags = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    host = config["applications"][0]["args"]["redis_url"].split("//")[1].split(":")[0]
    assert host.split(".")[0] == "redis"  # the Service, reached as redis.<its namespace>


def test_prometheus_podmonitor_selects_the_labelled_ray_pods():
    (monitor,) = _documents(DEPLOY / "prometheus" / "podmonitor.yaml")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (manifest,) = _documents(RAYSERVICE)
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        labels = group["template"]["metadata"]["labels"] | {"ray.io/is-ray-node": "yes"}
        assert selector.items() <= labels.items()
        ports = {p["name"] for p in group["template"]["spec"]["containers"][0]["ports"]}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_yamllint_passes_on_deploy():
    lint = subprocess.run(
        [_tool("yamllint"), "--strict", "deploy"], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hadolint_passes_on_the_dockerfile():
    lint = subprocess.run(
        [_tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerignore_lets_in_every_path_the_dockerfile_copies():
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert copied
    assert [source for source in copied if source.rstrip("/") not in allowed] == []
    assert all((ROOT / source).exists() for source in copied)
