"""Deployment artefacts: the Dockerfile (linted, its install steps run from the lock), the lock
(the tested environment, covering pyproject), Kubernetes and KServe manifests (validated, the
image set by kustomize, and the server started the way they start it)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import free_port, linear_model, running_server, write_version
from .support.metrics import parse
from .support.waiting import NOT_YET, wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCKS = ROOT / "deploy" / "docker"


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is a test dependency (pip install -e '.[test]')"
    return str(path)


def _wait_answering(url: str, proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200 (30 s at most) while ``proc`` keeps running."""

    def answering() -> bool:
        assert proc.poll() is None, log.read_text() if log else proc.returncode
        return httpx.get(url, timeout=1).status_code == 200

    wait_for(answering, 30, what=f"{url} to answer 200", interval=0.1, ignore=NOT_YET)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# grpc.health.v1.HealthCheckResponse{status: SERVING}, by hand (field 1, varint 1).
SERVING = b"\x08\x01"


def _grpc_health(target: str) -> bytes:
    """The bytes of grpc.health.v1.Health/Check for the server ("": an empty request), as
    Kubernetes' grpc probe and grpc_health_probe ask it."""
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")  # bytes in, bytes out
        return bytes(check(b"", timeout=10, wait_for_ready=True))


def _grpc_ready(target: str) -> bool:
    """ServerReady through the unmodified tritonclient.grpc."""
    client = tg.InferenceServerClient(target)
    try:
        return bool(client.is_server_ready())
    finally:
        client.close()


# ------------------------------------------------------------------ Dockerfile
def test_dockerfile_is_lint_clean() -> None:
    out = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == ""


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\n")
    out = subprocess.run([_tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout  # the linter really runs


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_contract() -> None:
    text = _dockerfile()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "gcc" not in runtime  # no compiler in the image that runs
    assert re.search(r"^USER 10001", runtime, re.M)
    assert re.search(r"^EXPOSE 8080 8081$", runtime, re.M)  # HTTP and gRPC
    env = _env_of_runtime_stage()
    assert (env["MLSERVE_PORT"], env["MLSERVE_GRPC_PORT"]) == ("8080", "8081")
    assert "MLSERVE_REGISTRY=/mnt/models" in runtime
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"mlserve-healthcheck\"\]", runtime, re.M)
    assert re.search(r"^ARG ONNXRUNTIME=onnxruntime$", runtime, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "mlserve-demo"} <= set(ignored)


def _env_of_runtime_stage() -> dict[str, str]:
    runtime = _dockerfile().split("AS runtime", 1)[1]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", runtime, re.M):
        for key, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            env[key] = value
    return env


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """name → (version, number of hashes) of a lock written by scripts/lock."""
    out: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", line):
            name = canonicalize_name(m[1])
            out[name] = (m[2], 0)
        elif m := re.match(r"^ +--hash=sha256:[0-9a-f]{64}", line):
            out[name] = (out[name][0], out[name][1] + 1)
    return out


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements need in this environment, extras followed."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements if not r.marker or r.marker.evaluate()]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen and not extras:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(req.name) or []:
            dep = Requirement(text)
            wanted = not dep.marker or any(
                dep.marker.evaluate({"extra": e}) for e in (extras or {""})
            )
            if wanted:
                todo.append((dep, frozenset(dep.extras)))
    return seen


def test_the_lock_is_the_tested_environment_and_covers_pyproject() -> None:
    """The image installs deploy/docker/requirements.lock: exactly the closure of pyproject's
    runtime dependencies, each at a version pyproject accepts and at the version installed
    here (scripts/test installs under the lock), every entry hashed. After a dependency
    change, scripts/lock rewrites it."""
    import tomllib

    locked = _locked(LOCKS / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for req in wanted:
        if req.marker and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in the lock: run scripts/lock"
        assert req.specifier.contains(locked[name][0], prereleases=True), (
            f"the lock has {name}=={locked[name][0]}, pyproject wants {req}: run scripts/lock"
        )
    closure = _closure(wanted)
    assert set(locked) == closure, (
        f"missing from the lock: {sorted(closure - set(locked))}, "
        f"not needed: {sorted(set(locked) - closure)}: run scripts/lock"
    )
    for name, (version, hashes) in locked.items():
        assert hashes >= 1, f"{name} has no hash in the lock"
        installed = importlib.metadata.version(name)
        assert installed == version, (
            f"{name} {installed} is installed, the lock has {version}: the tests ran on "
            "something other than the image's versions (install with scripts/test)"
        )
    gpu = _locked(LOCKS / "onnxruntime-gpu.lock")
    assert list(gpu) == ["onnxruntime-gpu"] and gpu["onnxruntime-gpu"][1] >= 1
    ours = tuple(int(x) for x in locked["onnxruntime"][0].split(".")[:2])
    cuda = tuple(int(x) for x in gpu["onnxruntime-gpu"][0].split(".")[:2])
    assert cuda <= ours and cuda >= (ours[0], ours[1] - 2), (cuda, ours)


@pytest.mark.slow
def test_install_steps_in_a_fresh_environment(tmp_path: Path) -> None:
    """The build stage's and the runtime stage's steps, as the Dockerfile runs them: copy
    what it copies, build the wheel, install it into a fresh venv, start the entrypoint,
    probe it with the health check command."""
    text = _dockerfile()
    build = text.split("AS runtime", 1)[0]
    src = tmp_path / "src"
    src.mkdir()
    for line in re.findall(r"^COPY (?!--)(.+) \S+$", build, re.M):
        for item in line.split():
            if item.startswith("deploy/"):
                continue
            target = src / item
            if (ROOT / item).is_dir():
                shutil.copytree(
                    ROOT / item, target, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__")
                )
            else:
                shutil.copy2(ROOT / item, target)
    wheels = tmp_path / "wheels"
    envs = {}
    for name in ("build", "runtime"):
        subprocess.run([sys.executable, "-m", "venv", str(tmp_path / name)], check=True)
        envs[name] = {
            # (nor PYTHONPATH: a checkout on it would pass for the installed wheel)
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MLSERVE_", "VIRTUAL_")) and k != "PYTHONPATH"
            },
            "PATH": f"{tmp_path / name / 'bin'}:{os.environ['PATH']}",
        }
    steps = ROOT / "deploy" / "docker"
    out = subprocess.run(
        [str(steps / "build-wheel.sh"), str(src), str(wheels)],
        env=envs["build"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "built mlserve-" in out.stdout
    out = subprocess.run(
        [str(steps / "install-wheel.sh"), str(wheels), "onnxruntime", str(LOCKS)],
        env=envs["runtime"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "installed" in out.stdout
    refused = subprocess.run(
        [str(steps / "install-wheel.sh"), str(wheels), "onnxruntime-rocm-typo", str(LOCKS)],
        env=envs["runtime"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "unknown onnxruntime package" in refused.stderr
    # The image's environment, with loopback instead of every interface (tests stay local).
    registry = tmp_path / "registry"
    write_version(registry, "m", 1, linear_model())
    env = {**envs["runtime"], **_env_of_runtime_stage()}
    env["PATH"] = envs["runtime"]["PATH"]
    port = free_port()
    grpc_port = free_port()  # the image's 8081 may be taken here
    env.update(
        MLSERVE_HOST="127.0.0.1",
        MLSERVE_PORT=str(port),
        MLSERVE_GRPC_PORT=str(grpc_port),
        MLSERVE_REGISTRY=str(registry),
        MLSERVE_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
    )
    rt = tmp_path / "runtime" / "bin"
    health = [str(rt / "mlserve-healthcheck")]
    assert subprocess.run(health, env=env, capture_output=True).returncode == 1  # not up yet
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [str(rt / "mlserve"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_answering(url + "/v2/health/ready", server, tmp_path / "server.log")
        assert subprocess.run(health, env=env, capture_output=True).returncode == 0
        proxied = {**env, "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
        assert subprocess.run(health, env=proxied, capture_output=True).returncode == 0
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [1] * 20}]}
        assert httpx.post(url + "/v2/models/m/infer", json=body).status_code == 200
        assert _grpc_health(f"127.0.0.1:{grpc_port}") == SERVING
        kernel = subprocess.run(
            [str(rt / "python"), "-c", "import mlserve.monitoring.kernel as k;"
             "print(k.IMPLEMENTATION)"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert kernel.stdout.strip() == "cython"
    finally:
        server.terminate()
        code = server.wait(30)
        log.close()
    assert code == 0


# ------------------------------------------------------------------ Kubernetes
K8S = ROOT / "deploy" / "kubernetes" / "mlserve.yaml"


def test_kubernetes_manifests_are_valid() -> None:
    out = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", str(K8S)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = sorted(d["kind"] for d in _docs(K8S))
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    ]


def test_kubernetes_manifests_ship_what_they_reference_and_share_state() -> None:
    """Every claim, service account, config map and scale target the manifests name is in
    them (the admin Secret only as optional: it is never shipped with a value); replicas
    share one writable state volume for routing.json and audit.jsonl (tests/test_fleet.py
    runs that arrangement), and the registry is read-only."""
    docs = _docs(K8S)
    shipped = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    for claim in claims.values():
        assert ("PersistentVolumeClaim", claim["claimName"]) in shipped, claim
    for v in pod["volumes"]:
        assert "configMap" not in v and "secret" not in v, v
    assert "serviceAccountName" not in pod  # the namespace's default: nothing to ship
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        assert ref is None or ref.get("optional") is True, env
    for d in docs:
        target = d["spec"].get("scaleTargetRef")
        if target:
            assert (target["kind"], target["name"]) in shipped
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    state = mounts["state"]
    assert env["MLSERVE_STATE_DIR"] == state["mountPath"] and not state.get("readOnly")
    assert Path(env["MLSERVE_AUDIT_LOG"]).parent == Path(state["mountPath"])
    assert "state" in claims and not claims["state"].get("readOnly")
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    # Several replicas on several nodes write it: ReadWriteMany.
    assert pvcs[claims["state"]["claimName"]]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert mounts["registry"]["readOnly"] is True and claims["registry"]["readOnly"] is True
    assert float(env["MLSERVE_POLL_SECONDS"]) > 0  # replicas re-read routing.json on a scan


def test_kubernetes_validate_catches_a_broken_manifest(tmp_path: Path) -> None:
    docs = _docs(K8S)
    docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = (
        "/v2/health/ready"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run(
        [_tool("kubernetes-validate"), "--strict", str(broken)], capture_output=True, text=True
    )
    assert out.returncode != 0 and "pathh" in out.stdout + out.stderr


def test_deployment_matches_the_server(tmp_path: Path) -> None:
    """Probes, scrape annotations and the grace period, checked against a real server."""
    deploy = next(d for d in _docs(K8S) if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env["MLSERVE_DRAIN_SECONDS"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= drain + pause
    ports = {p["name"]: p for p in container["ports"]}
    port = ports["http"]["containerPort"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) == "8080"
    assert ports["grpc"]["containerPort"] == 8081 and env["MLSERVE_GRPC_PORT"] == "8081"
    service = next(d for d in _docs(K8S) if d["kind"] == "Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"
    grpc_port = service_ports["grpc"]
    assert grpc_port["targetPort"] == "grpc" and grpc_port["port"] == 8081
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"  # gRPC without TLS
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http", probe
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/mnt/models"}
    hpa = next(d for d in _docs(K8S) if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    registry = tmp_path / "registry"
    write_version(registry, "m", 1, linear_model())
    # The container's args and its gRPC setting from the environment, as in the pod (on a
    # free port: 8081 may be taken on this machine).
    free = free_port()
    with running_server(registry, *container["args"], env={"MLSERVE_GRPC_PORT": str(free)}) as srv:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert httpx.get(srv.url + path).status_code == 200, probe
        assert _grpc_ready(f"127.0.0.1:{free}")
        assert _grpc_health(f"127.0.0.1:{free}") == SERVING
        metrics = httpx.get(srv.url + annotations["prometheus.io/path"])
        assert metrics.status_code == 200 and "mlserve_model_ready" in metrics.text
        # exported at 0 from the first scan, so increase() in the alert sees a first failure
        assert parse(metrics.text).value("mlserve_model_load_failures_total", model="m") == 0


# ------------------------------------------------------------------ KServe
KSERVE = ROOT / "deploy" / "kserve"


def _images(docs: list[dict[str, Any]]) -> list[str]:
    """Every container image of the manifests (pod templates and KServe's runtime)."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec)
        out += [c["image"] for c in pod.get("containers", []) if "image" in c]
    return out


def test_one_kustomization_sets_the_image_of_every_manifest(tmp_path: Path) -> None:
    """The image name and tag live in each directory's kustomization.yaml (default
    mlserve:latest, the local-cluster build); an overlay renames every container's image."""
    for sub in ("kubernetes", "kserve"):
        kust = yaml.safe_load((ROOT / "deploy" / sub / "kustomization.yaml").read_text())
        (entry,) = kust["images"]
        assert (entry["newName"], entry["newTag"]) == ("mlserve", "latest")
        images = [i for r in kust["resources"] for i in _images(_docs(ROOT / "deploy" / sub / r))]
        assert images and {i.split(":")[0] for i in images} == {entry["name"]}, images
    kubectl = shutil.which("kubectl")
    if kubectl is None:  # the structure above is what kustomize reads; rendering needs it
        return
    deploy = tmp_path / "deploy"
    for sub in ("kubernetes", "kserve"):
        shutil.copytree(ROOT / "deploy" / sub, deploy / sub)
    (deploy / "prod").mkdir()
    (deploy / "prod" / "kustomization.yaml").write_text(
        "resources: [../kubernetes, ../kserve]\n"
        "images:\n  - name: mlserve\n    newName: registry.example.com/ml/mlserve\n"
        '    newTag: "1.2.3"\n'
    )
    for path, expected in (
        (deploy / "kubernetes", "mlserve:latest"),
        (deploy / "prod", "registry.example.com/ml/mlserve:1.2.3"),
    ):
        out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        images = _images(docs)
        assert images and set(images) == {expected}, (path, images)
    assert len(docs) == len(_docs(K8S)) + len(_docs(ROOT / "deploy/kserve/servingruntime.yaml")) + (
        len(_docs(ROOT / "deploy/kserve/inferenceservice.yaml"))
    )


def test_kserve_manifests_structure() -> None:
    (runtime,) = _docs(KSERVE / "servingruntime.yaml")
    (isvc,) = _docs(KSERVE / "inferenceservice.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ServingRuntime"
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert any(f["name"] == "onnx" and f.get("autoSelect") for f in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert "--model_dir=/mnt/models" in container["args"]
    assert "--http_port=8080" in container["args"]
    assert "--grpc_port=8081" in container["args"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == "onnx" and model["protocolVersion"] == "v2"


def _single_model_dir(tmp_path: Path) -> Path:
    mdir = tmp_path / "mnt" / "models"
    for v in (1, 2):
        write_version(mdir.parent, "models", v, linear_model(seed=v))
    return mdir


@pytest.mark.slow
def test_server_runs_with_kserve_arguments(tmp_path: Path) -> None:
    """The ServingRuntime's own args ({{.Name}} filled in) over a directory of one model's
    versions, as KServe's storage initializer leaves it in /mnt/models."""
    (runtime,) = _docs(KSERVE / "servingruntime.yaml")
    args = runtime["spec"]["containers"][0]["args"]
    mdir = _single_model_dir(tmp_path)
    (mdir / "model.toml").write_text('[versions]\npolicy = "all"\n[routing]\nstable = 1\n')
    assert "--grpc_port=8081" in args
    grpc_port = free_port()  # 8081 may be taken on this machine
    filled = [
        re.sub(r"^--grpc_port=\d+$", f"--grpc_port={grpc_port}", a)
        .replace("{{.Name}}", "credit")
        .replace("/mnt/models", str(mdir))
        for a in args
        if not a.startswith("--http_port")  # the harness passes a free --port instead
    ]
    assert f"--grpc_port={grpc_port}" in filled
    env = {"MLSERVE_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    with running_server(tmp_path / "unused", *filled, env=env) as srv:
        meta = httpx.get(srv.url + "/v2/models/credit").json()
        assert meta["versions"] == ["1", "2"]
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20], "data": [1] * 20}]}
        r = httpx.post(srv.url + "/v2/models/credit/infer", json=body)
        assert r.status_code == 200 and r.json()["model_name"] == "credit"
        assert r.headers["mlserve-model-version"] == "1"  # model.toml beside the versions
        assert httpx.get(srv.url + "/v2/models/models").status_code == 404
        # gRPC from the runtime's --grpc_port: ready, and the same model and answer as HTTP.
        target = f"127.0.0.1:{grpc_port}"
        assert _grpc_ready(target) and _grpc_health(target) == SERVING
        client = tg.InferenceServerClient(target)
        try:
            x = tg.InferInput("X", [1, 20], "FP32")
            x.set_data_from_numpy(np.ones((1, 20), np.float32))
            result = client.infer("credit", [x])
        finally:
            client.close()
        answer = result.get_response()
        assert answer.model_name == "credit" and answer.model_version == "1"
        http = {o["name"]: o["data"] for o in r.json()["outputs"]}
        for name, data in http.items():
            assert np.allclose(result.as_numpy(name).ravel(), np.asarray(data).ravel()), name


def test_kserve_environment_and_bare_model_file(tmp_path: Path) -> None:
    """MODEL_NAME and a local STORAGE_URI, over a bare model.onnx (version 1)."""
    bare = tmp_path / "bare"
    write_version(tmp_path, "bare", 1, linear_model())
    for item in (bare / "1").iterdir():
        item.rename(bare / item.name)
    (bare / "1").rmdir()
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")
    } | {"MODEL_NAME": "solo", "STORAGE_URI": f"file://{bare}",
         "MLSERVE_AUDIT_LOG": str(tmp_path / "audit.jsonl")}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlserve", "serve", f"--http_port={port}", "--log-level=warning"],
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_answering(url + "/v2/health/ready", proc)
        x = np.ones((1, 20), np.float32)
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 20],
                            "data": x.ravel().tolist()}]}  # fmt: skip
        r = httpx.post(url + "/v2/models/solo/infer", json=body)
        assert r.status_code == 200 and r.headers["mlserve-model-version"] == "1"
        # the audit log lives elsewhere, so writing it does not look like a new version
        assert httpx.get(url + "/v2/models/solo").json()["versions"] == ["1"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


@pytest.mark.slow
def test_one_model_with_nothing_to_serve_is_not_ready(tmp_path: Path) -> None:
    """A wrong storageUri or a broken model must not look Ready to KServe."""
    empty = tmp_path / "empty"
    empty.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["MLSERVE_AUDIT_LOG"] = str(tmp_path / "audit.jsonl")
    cmd = [sys.executable, "-m", "mlserve", "serve", "--model_name=m1",
           f"--model_dir={empty}", f"--http_port={port}", "--log-level=warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_answering(url + "/v2/health/live", proc)
        time.sleep(1)  # the initial load of nothing has long finished
        assert httpx.get(url + "/v2/health/ready").status_code == 503
        write_version(tmp_path, "empty", 1, linear_model())  # the model arrives: ready
        for _ in range(100):
            if httpx.get(url + "/v2/health/ready").status_code == 200:
                break
            time.sleep(0.2)
        assert httpx.get(url + "/v2/health/ready").status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
