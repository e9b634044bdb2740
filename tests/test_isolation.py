"""One model's files affect only that model (issue 17, part 1).

A registry of three real models (a small ONNX linear model and two scikit-learn models
exported by skl2onnx); one of them is given a bad artifact, in turn each of those found
against a live server: a ``model.toml`` that is not UTF-8, holds a list of lists where
strings belong or nests 5,000 deep; a truncated ``routing.json``; a ``reference.json`` with
200,000 bins; a ``samples.npz`` zip bomb; a ``lineage.json`` that is a list; a
``validation.json`` that is not JSON; an ONNX file of garbage; an input with a fixed
dimension of 300,000,000.

Each case runs a real server twice: once while the corruption arrives (hot), once started
on the corrupted registry. Each time the other two models answer with the outputs
onnxruntime computes in-process, hot reload keeps working for them (a newly published
version of another model loads), the bad model or version says why (metadata, the model
repository's load endpoint), the load-failure counter moved, the registry scan counter did
not (the registry directory itself was readable), and the server's peak resident memory
stays under 1.5 GB. A hypothesis property corrupts artifacts at random on one shared server.
The admin token: refused at start with surrounding whitespace, compared as UTF-8.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mlserve.config import ServerSettings
from mlserve.errors import ConfigError
from mlserve.monitoring.profile import load_profile
from mlserve.registry.layout import read_json

from .conftest import free_port, linear_model, running_server, wait_for
from .support.metrics import parse

MODELS = ("lin", "iris", "gbr")  # the linear ONNX model, two scikit-learn models
RSS_LIMIT_KB = 1_500_000  # peak resident memory of the server (VmHWM)
FAILURES = "mlserve_model_load_failures_total"
SCANS = "mlserve_registry_scan_failures_total"


# ------------------------------------------------------------------ the models


def _sklearn(name: str, variant: int) -> onnx.ModelProto:
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    if name == "iris":
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        x, y = load_iris(return_X_y=True)
        est: Any = LogisticRegression(C=(1.0, 0.05, 5.0)[variant % 3], max_iter=500).fit(x, y)
        options: dict[Any, Any] = {id(est): {"zipmap": False}}
    else:
        from sklearn.datasets import load_diabetes
        from sklearn.ensemble import GradientBoostingRegressor

        x, y = load_diabetes(return_X_y=True)
        est = GradientBoostingRegressor(
            n_estimators=10 + 5 * variant, max_depth=2, random_state=variant
        ).fit(x, y)
        options = {}
    return convert_sklearn(
        est,
        initial_types=[("X", FloatTensorType([None, x.shape[1]]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


_PROTOS: dict[tuple[str, int], bytes] = {}


def model_bytes(name: str, variant: int = 0) -> bytes:
    """The serialized ONNX model ``name`` (variant: other weights), built once per run."""
    key = (name, variant)
    if key not in _PROTOS:
        proto = linear_model(seed=variant) if name == "lin" else _sklearn(name, variant)
        onnx.checker.check_model(proto)
        _PROTOS[key] = proto.SerializeToString()
    return _PROTOS[key]


N_FEATURES = {"lin": 20, "iris": 4, "gbr": 10}


def rows(name: str) -> np.ndarray:
    rng = np.random.default_rng(len(name))
    return rng.standard_normal((3, N_FEATURES[name])).astype(np.float32)


_EXPECTED: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def expected(name: str, variant: int = 0) -> dict[str, np.ndarray]:
    """What onnxruntime answers in this process for ``rows(name)``."""
    if (name, variant) not in _EXPECTED:
        data = model_bytes(name, variant)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outputs = sess.run(None, {"X": rows(name)})
        _EXPECTED[(name, variant)] = dict(zip(names, outputs, strict=True))
    return _EXPECTED[(name, variant)]


def request(name: str) -> dict[str, Any]:
    x = rows(name)
    tensor = {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    return {"inputs": [tensor]}


def infer_matches(c: httpx.Client, name: str, variant: int = 0, path: str = "") -> None:
    """``name`` answers 200 with the outputs onnxruntime gives in-process."""
    r = c.post(f"/v2/models/{name}{path}/infer", json=request(name))
    assert r.status_code == 200, (name, r.status_code, r.text[:500])
    got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}
    want = expected(name, variant)
    assert set(got) == set(want), (got.keys(), want.keys())
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


def write_model_version(
    root: Path, name: str, version: int, data: bytes, files: dict[str, bytes] | None = None
) -> Path:
    """What a publisher does: a hidden directory with model.onnx, lineage.json (the model's
    sha256) and ``files`` (which may replace lineage.json), renamed into place."""
    hidden = root / name / f".tmp-{version}"
    shutil.rmtree(hidden, ignore_errors=True)
    hidden.mkdir(parents=True)
    (hidden / "model.onnx").write_bytes(data)
    (hidden / "lineage.json").write_text(
        json.dumps({"model_sha256": hashlib.sha256(data).hexdigest()})
    )
    for fname, content in (files or {}).items():
        (hidden / fname).write_bytes(content)
    os.rename(hidden, root / name / str(version))
    return root / name / str(version)


def make_registry(root: Path) -> Path:
    for name in MODELS:
        write_model_version(root, name, 1, model_bytes(name))
    return root


# ------------------------------------------------------------------ bad artifacts


def zip_bomb(member: str, gib: float = 1.0, small: dict[str, np.ndarray] | None = None) -> bytes:
    """A samples.npz whose ``member`` (e.g. ``inputs.X``) is ``gib`` GiB of FP32 zeros (a
    valid .npy, ~1 MB compressed), after the ``small`` arrays. Written in chunks: nothing of
    that size ever exists here, in memory or on disk."""
    n = int(gib * (1 << 30)) // 4
    header = {"descr": "<f4", "fortran_order": False, "shape": (1, n)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in (small or {}).items():
            with zf.open(name + ".npy", "w") as fh:
                np.lib.format.write_array(fh, array)
        with zf.open(member + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            chunk = bytes(16 << 20)
            left = n * 4
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return out.getvalue()


_BOMB: list[bytes] = []


def bomb() -> bytes:
    if not _BOMB:
        _BOMB.append(zip_bomb("inputs.X"))
    return _BOMB[0]


def profile_with_bins(features: int, edges: int) -> bytes:
    """A valid reference profile: ``features`` numeric features of ``edges + 1`` bins each."""
    n = edges + 1
    feats = [
        {"name": f"f{i}", "kind": "numeric", "column": i, "n": n, "missing": 0,
         "counts": [1] * n, "edges": [float(e) for e in range(edges)],
         "mean": 0.0, "std": 1.0, "min": -1.0, "max": float(edges)}
        for i in range(features)
    ]  # fmt: skip
    doc = {"schema_version": 1, "n_rows": n, "bins": 10, "top_k": 20,
           "features": feats, "outputs": {}}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def fixed_dim_model(dim: int) -> bytes:
    """``y = sum(X)`` over an input declared ``[1, dim]``: tiny file, huge declared input."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["y"], keepdims=0)],
        "fixed",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return proto.SerializeToString()


@dataclass(frozen=True)
class Bad:
    """One bad artifact: where it goes, what it holds, what the reason must say."""

    artifact: str
    corruption: str
    level: str  # "model": the model's own file; "version": a file of a newly published version
    content: Callable[[str], bytes]  # of the victim's name
    says: tuple[str, ...]  # the reason names the file and what is wrong


BAD = [
    Bad("model.toml", "non-utf8", "model", lambda _: b"[inputs]\nmax_rows = 4 # \xff\xfe\n",
        ("model.toml", "UTF-8")),
    Bad("model.toml", "list-of-lists", "model", lambda _: b"[payloads]\nfields = [[]]\n",
        ("model.toml", "[payloads] fields", "strings")),
    Bad("model.toml", "deep-nesting", "model",
        lambda _: b"[versions]\nspecific = " + b"[" * 5000 + b"]" * 5000 + b"\n",
        ("model.toml", "nest")),
    Bad("routing.json", "truncated", "model", lambda _: b'{"schema": 2, "override": {"sta',
        ("routing.json", "not valid JSON")),
    # 200,000 bins over the model's own columns (the profile fits the model otherwise)
    Bad("reference.json", "200k-bins", "version",
        lambda v: profile_with_bins(N_FEATURES[v], 200_000 // N_FEATURES[v] - 1),
        ("reference.json", "edges", "at most 1000 per feature")),
    Bad("samples.npz", "zip-bomb", "version", lambda _: bomb(),
        ("samples.npz", "'inputs.X' holds 1024.0 MiB", "256 MiB")),
    Bad("lineage.json", "a-list", "version", lambda _: b"[1, 2]", ("lineage.json", "object")),
    Bad("validation.json", "not-json", "version", lambda _: b"{not json",
        ("validation.json", "not valid JSON")),
    Bad("model.onnx", "garbage", "version", lambda _: b"\x08\x07garbage, not a protobuf" * 50,
        ("onnxruntime could not load the model",)),
    Bad("model.onnx", "fixed-dim-300M", "version", lambda _: fixed_dim_model(300_000_000),
        ("input 'X'", "300000000", "max-elements")),
]  # fmt: skip


# ------------------------------------------------------------------ observing the server


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


TOKEN = "isolation-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"MLSERVE_ADMIN_TOKEN": TOKEN}


def others(victim: str) -> list[str]:
    return [m for m in MODELS if m != victim]


def reason_of(c: httpx.Client, victim: str, bad: Bad) -> str:
    """What the victim's metadata says about the bad artifact."""
    meta = c.get(f"/v2/models/{victim}").json()
    params = meta["parameters"]
    if bad.level == "model":
        return str(params.get("config_error", ""))
    v2 = params["versions"].get("2", {})
    if bad.artifact == "validation.json":  # a gate result: the version loads, its gate fails
        return str(v2.get("gate", {}).get("reason", ""))
    return str(v2.get("reason", "")) if v2.get("state") == "failed" else ""


def apply(root: Path, victim: str, bad: Bad) -> None:
    if bad.level == "model":
        path = root / victim / bad.artifact
        tmp = path.with_name("." + path.name + ".new")
        tmp.write_bytes(bad.content(victim))
        os.replace(tmp, path)
        return
    if bad.artifact == "model.onnx":
        write_model_version(root, victim, 2, bad.content(victim))
    else:
        write_model_version(
            root, victim, 2, model_bytes(victim), {bad.artifact: bad.content(victim)}
        )


def check_others(c: httpx.Client, victim: str, srv_pid: int) -> None:
    for name in others(victim):
        infer_matches(c, name)
        assert c.get(f"/v2/models/{name}/ready").status_code == 200
    assert c.get("/v2/health/ready").status_code == 200
    assert peak_rss_kb(srv_pid) < RSS_LIMIT_KB


def probe_hot_reload(c: httpx.Client, root: Path, name: str, version: int) -> None:
    """Publish a new version of a healthy model; it loads and answers its own outputs."""
    write_model_version(root, name, version, model_bytes(name, version))
    # Requests, not the ready endpoint: that reads the version's state, which turns ready
    # when it loaded, before the scan that loaded it has finished and published it.
    url = f"/v2/models/{name}/versions/{version}/infer"
    wait_for(lambda: c.post(url, json=request(name)).status_code == 200, 30)
    infer_matches(c, name, version, f"/versions/{version}")


# ------------------------------------------------------------------ the cases


@pytest.mark.parametrize(
    "index", range(len(BAD)), ids=[f"{b.artifact}-{b.corruption}" for b in BAD]
)
@pytest.mark.slow
def test_a_bad_artifact_affects_only_its_model(tmp_path: Path, index: int) -> None:
    bad = BAD[index]
    victim = MODELS[index % 3]
    probe = others(victim)[0]
    root = make_registry(tmp_path / "registry")
    if bad.artifact == "validation.json":
        (root / victim / "model.toml").write_text("[gate]\nrequire_gate = false\n")
    args = ("--poll-seconds", "0.1")

    # While serving: the corruption arrives, the others go on, hot reload goes on.
    with running_server(root, *args, env=ENV) as srv, httpx.Client(base_url=srv.url) as c:
        check_others(c, victim, srv.proc.pid)
        before = parse(c.get("/metrics").text).value(FAILURES, model=victim)
        apply(root, victim, bad)
        wait_for(lambda: all(s in reason_of(c, victim, bad) for s in bad.says), 30)
        probe_hot_reload(c, root, probe, 2)
        check_others(c, victim, srv.proc.pid)
        text = c.get("/metrics").text
        if bad.artifact != "validation.json":  # a gate that fails is not a failed load
            assert parse(text).value(FAILURES, model=victim) > before
        assert parse(text).value(SCANS) == 0
        infer_matches(c, victim, 0, "/versions/1")  # the victim's loaded version serves on
        # Logged once, not at every scan (the scan runs every 0.1 s).
        log = srv.log()
        assert log.count(bad.artifact) <= 3, log[-3000:]

    # Started on the corrupted registry: the same.
    with running_server(root, *args, env=ENV) as srv, httpx.Client(base_url=srv.url) as c:
        check_others(c, victim, srv.proc.pid)
        reason = reason_of(c, victim, bad)
        assert all(s in reason for s in bad.says), reason
        assert str(root) not in reason
        if bad.level == "model" and bad.artifact == "model.toml":
            r = c.post(f"/v2/models/{victim}/infer", json={"inputs": []})
            assert r.status_code == 503 and "model.toml" in r.json()["error"], r.text
            assert c.get(f"/v2/models/{victim}/ready").status_code == 503
            assert parse(c.get("/metrics").text).value(FAILURES, model=victim) >= 1
        r = c.post(f"/v2/repository/models/{victim}/load", headers=AUTH)
        if bad.level == "model":
            assert r.status_code == 409, (r.status_code, r.text)
            doc = r.json()
            assert repr(victim) in doc["error"] and bad.artifact in doc["error"], doc
        else:
            assert r.status_code == 200, (r.status_code, r.text)
            doc = r.json()
            if bad.artifact != "validation.json":
                assert doc["versions"]["2"] == "failed", doc
                assert bad.artifact in doc["reasons"]["2"] or bad.says[0] in doc["reasons"]["2"]
        probe_hot_reload(c, root, probe, 3)
        check_others(c, victim, srv.proc.pid)
        assert parse(c.get("/metrics").text).value(SCANS) == 0


@pytest.mark.slow
def test_unneeded_samples_members_are_never_read(tmp_path: Path) -> None:
    """A samples.npz may hold more than warm-up needs: a 1 GiB member nobody reads does not
    stop the version loading, nor cost its memory."""
    root = make_registry(tmp_path / "registry")
    samples = zip_bomb("extras.unused", small={"inputs.X": rows("iris")})
    assert len(samples) < 8 << 20
    write_model_version(root, "iris", 2, model_bytes("iris"), {"samples.npz": samples})
    with running_server(root, env=ENV) as srv, httpx.Client(base_url=srv.url) as c:
        meta = c.get("/v2/models/iris").json()["parameters"]["versions"]["2"]
        assert meta["state"] == "ready", meta
        assert meta["warmup"]["source"] == "samples.npz"
        # Reading the member would take over 1 GiB; the server is ~150 MB without it.
        assert peak_rss_kb(srv.proc.pid) < 512_000


def test_warm_up_keeps_to_max_elements(tmp_path: Path) -> None:
    """Warm-up allocates no more per input than a request may hold: samples beyond
    ``--max-elements`` are cut to the rows that fit (and said so); a fixed shape within the
    limit loads; one over it fails only its version, with the reason."""
    root = make_registry(tmp_path / "registry")
    x = np.random.default_rng(0).standard_normal((1000, 20)).astype(np.float32)
    sess = ort.InferenceSession(model_bytes("lin"), providers=["CPUExecutionProvider"])
    golden = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"X": x}), strict=True))
    buf = io.BytesIO()
    np.savez(buf, **{"inputs.X": x}, **{f"outputs.{k}": v for k, v in golden.items()})
    write_model_version(root, "lin", 2, model_bytes("lin"), {"samples.npz": buf.getvalue()})
    write_model_version(root, "iris", 2, fixed_dim_model(4_000))
    write_model_version(root, "gbr", 2, fixed_dim_model(6_000))
    with (
        running_server(root, "--max-elements", "5000", env=ENV) as srv,
        httpx.Client(base_url=srv.url) as c,
    ):
        lin = c.get("/v2/models/lin").json()["parameters"]["versions"]["2"]
        assert lin["state"] == "ready" and lin["warmup"]["source"] == "samples.npz", lin
        assert "first 250 of the 1000 samples.npz rows" in " ".join(lin["notes"]), lin
        iris = c.get("/v2/models/iris").json()["parameters"]["versions"]["2"]
        assert iris["state"] == "ready", iris
        gbr = c.get("/v2/models/gbr").json()["parameters"]["versions"]["2"]
        assert gbr["state"] == "failed" and "6000 elements at one row" in gbr["reason"], gbr
        assert "over the element limit 5000" in gbr["reason"], gbr
        infer_matches(c, "lin", 0, "/versions/2")


def test_profile_bounds(tmp_path: Path) -> None:
    """reference.json: at most 1,000 edges (levels) per feature and 100,000 bins in all."""
    path = tmp_path / "reference.json"
    path.write_bytes(profile_with_bins(3, 1000))
    assert len(load_profile(path)["features"]) == 3
    path.write_bytes(profile_with_bins(3, 1001))
    with pytest.raises(ValueError, match=r"features\[0\]\.edges: 1001 edges, at most 1000"):
        load_profile(path)
    path.write_bytes(profile_with_bins(100, 1000))  # 100 × 1,001 bins
    with pytest.raises(ValueError, match="100100 bins in all, at most 100000"):
        load_profile(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{}" + b" " * (16 << 20), "too large: over 16 MiB"),
        (b'{"a": "\xff"}', "not UTF-8: byte 0xff at offset 7"),
        (b"[" * 65 + b"]" * 65, "nested too deep: 65 levels, at most 64"),
        (b"[" * 100_000, "nested too deep: 100000 levels"),
        (b'{"a": "' + b"[" * 100 + b'"}', None),  # brackets inside a string do not nest
        (b'{"a": "\\\\", "b": "]]"}', None),  # an escaped backslash ends no string
        (b"{not json", "not valid JSON"),
    ],
)
def test_json_files_are_read_within_limits(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "lineage.json"
    path.write_bytes(content)
    if says is None:
        assert isinstance(read_json(path), dict)
        return
    with pytest.raises(ValueError, match="^lineage.json is " + re.escape(says)):
        read_json(path)


# ------------------------------------------------------------------ a property, one server

KINDS = ("model.toml", "routing.json", "reference.json", "samples.npz", "lineage.json",
         "validation.json", "model.onnx")  # fmt: skip
CORRUPTIONS = ("truncate", "random", "wrong-type", "deep")
# Valid JSON or TOML of the wrong shape: scalars, a list of lists where names belong.
WRONG_TYPES = (b"[]", b'"x"', b"5", b"null", b'{"a": [[]]}', b"[payloads]\nfields = [[1]]\n",
               b"[versions]\nspecific = [[]]\n", b"a = [[[]]]\n")  # fmt: skip


@dataclass
class Shared:
    root: Path
    url: str
    pid: int
    probe_version: int = 1


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One server for the property: ``lin`` is the victim, with every artifact present."""
    root = make_registry(tmp_path_factory.mktemp("isolation") / "registry")
    vdir = root / "lin" / "1"
    x = rows("lin")
    outs = expected("lin")
    np.savez(
        vdir / "samples.npz", **{"inputs.X": x}, **{f"outputs.{k}": v for k, v in outs.items()}
    )
    (vdir / "reference.json").write_bytes(profile_with_bins(20, 9))
    (vdir / "validation.json").write_text(json.dumps({"criteria": [], "passed": True}))
    (root / "lin" / "model.toml").write_text('[versions]\npolicy = "latest"\n')
    with running_server(root, "--poll-seconds", "0.1", env=ENV) as srv:
        with httpx.Client(base_url=srv.url) as c:
            wait_for(lambda: (root / "lin" / "routing.json").exists())  # the stable pin
            infer_matches(c, "lin")
        yield Shared(root, srv.url, srv.proc.pid)


def corrupted(original: bytes, corruption: str, data: Any) -> bytes:
    if corruption == "truncate":
        return original[: data.draw(st.integers(0, max(0, len(original) - 1)))]
    if corruption == "random":
        return bytes(data.draw(st.binary(min_size=0, max_size=512)))
    if corruption == "wrong-type":
        return data.draw(st.sampled_from(WRONG_TYPES))  # type: ignore[no-any-return]
    depth = data.draw(st.sampled_from([100, 1000, 5000, 100_000]))
    opener = data.draw(st.sampled_from([b"[", b'{"a":', b"a = ["]))
    return opener + b"[" * depth + b"]" * depth


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@pytest.mark.slow
@given(data=st.data())
def test_any_corruption_leaves_the_other_models_serving(shared: Shared, data: Any) -> None:
    """Every artifact of the victim is corrupted at once, each in its own drawn way (or
    kept): loading the victim answers 200 or 409 (the reason), a version of another model
    published afterwards still loads (every scan since ran whole), and the other models
    answer what onnxruntime answers."""
    root = shared.root
    originals: dict[Path, bytes] = {}
    with httpx.Client(base_url=shared.url, timeout=30) as c:
        try:
            for kind in KINDS:
                corruption = data.draw(st.sampled_from((*CORRUPTIONS, "keep")), label=kind)
                if corruption == "keep":
                    continue
                level = ("model.toml", "routing.json")
                path = root / "lin" / kind if kind in level else root / "lin" / "1" / kind
                originals[path] = path.read_bytes() if path.exists() else b""
                tmp = path.with_name("." + path.name + ".new")
                tmp.write_bytes(corrupted(originals[path], corruption, data))
                os.replace(tmp, path)
            # Loading the victim now (as at a start: every file read again) answers what is
            # wrong, never a 500, and leaves the others alone.
            r = c.post("/v2/repository/models/lin/load", headers=AUTH)
            assert r.status_code in (200, 409), (r.status_code, r.text[:500])
            if r.status_code == 409:
                assert r.json()["code"] == "model_invalid" and "'lin'" in r.json()["error"]
            shared.probe_version += 1
            probe_hot_reload(c, root, "gbr", shared.probe_version)
            check_others(c, "lin", shared.pid)
            assert parse(c.get("/metrics").text).value(SCANS) == 0
        finally:
            for path, original in originals.items():
                path.write_bytes(original)


# ------------------------------------------------------------------ the admin token


@pytest.mark.parametrize("token", [" padded", "padded ", "tab\tinside", "nul\x7fdel", "\u2028sep"])
def test_a_token_with_whitespace_or_control_characters_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="MLSERVE_ADMIN_TOKEN"):
        ServerSettings.load(environ={"MLSERVE_ADMIN_TOKEN": token})


def test_the_server_refuses_to_start_with_a_padded_token(tmp_path: Path) -> None:
    root = make_registry(tmp_path / "registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    env["MLSERVE_ADMIN_TOKEN"] = "secret\n"
    cmd = [sys.executable, "-m", "mlserve", "serve", "--registry", str(root),
           "--port", str(free_port())]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "MLSERVE_ADMIN_TOKEN" in done.stderr and "whitespace" in done.stderr
    assert "secret" not in done.stderr  # the token itself is never printed


def test_a_non_ascii_token_is_compared_as_utf8(tmp_path: Path) -> None:
    token = "pässwörd"
    root = make_registry(tmp_path / "registry")
    env = {"MLSERVE_ADMIN_TOKEN": token}
    with running_server(root, env=env) as srv, httpx.Client(base_url=srv.url) as c:
        url = "/v2/admin/models/lin/routing"
        utf8 = c.get(url, headers={"Authorization": b"Bearer " + token.encode("utf-8")})
        assert utf8.status_code == 200, utf8.text
        latin1 = c.get(url, headers={"Authorization": b"Bearer " + token.encode("latin-1")})
        assert latin1.status_code == 401
        assert c.get(url, headers={"Authorization": "Bearer passwort"}).status_code == 401
