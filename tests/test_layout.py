"""Unit tests for mlserve.registry.layout: names, versions and registry scanning."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from mlserve.errors import InvalidInput
from mlserve.registry.layout import (
    VersionDir,
    check_model_name,
    is_valid_model_name,
    parse_version,
    remove_stale_staged,
    scan_registry,
    sha256_file,
)

GOOD_NAMES = [
    "fraud",
    "Fraud_Model-2",
    "a",
    "a.b",
    "model.v2",
    "a..b",
    "123",
    "x" * 128,
    "under_score",
    "trailing.",
]

BAD_NAMES = [
    "",
    ".",
    "..",
    ".hidden",
    "a/b",
    "../etc",
    "a\\b",
    "..\\x",
    "%2e%2e",
    "a%2fb",
    "with space",
    " leading",
    "trailing ",
    "tab\there",
    "new\nline",
    "x" * 129,
    "/abs",
    "/etc/passwd",
    "C:\\models",
    "C:",
    "caf\u00e9",
    "\u0661\u0662",  # Arabic-Indic digits
    "nul\x00",
    "a*",
    "~user",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_model_names_accepted(name):
    assert is_valid_model_name(name) is True
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_model_names_rejected(name):
    assert is_valid_model_name(name) is False
    with pytest.raises(InvalidInput, match=r"invalid model name") as info:
        check_model_name(name)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_input"
    assert info.value.reason == "name"


def test_invalid_model_name_message_is_truncated():
    with pytest.raises(InvalidInput) as info:
        check_model_name("x" * 10_000)
    assert len(info.value.message) < 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("42", 42), ("9", 9), ("10", 10), ("999999999999999999", 999999999999999999)],
)
def test_parse_version_accepts(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "00",
        "01",
        "-1",
        "+1",
        "1.0",
        "1e3",
        "abc",
        "",
        " 1",
        "1 ",
        "1\n",
        "0x10",
        "\u0661",  # Arabic-Indic one: int() would accept it
        "99999999999999999999",
        "1" * 19,
    ],
)
def test_parse_version_rejects(text):
    with pytest.raises(InvalidInput, match=r"invalid version") as info:
        parse_version(text)
    assert info.value.status_code == 400
    assert info.value.reason == "version"


# ---------------------------------------------------------------------------------------------
# scan_registry


def _version(root, model, version, payload=b"onnx-bytes", lineage=None):
    vdir = root / model / str(version)
    vdir.mkdir(parents=True)
    (vdir / "model.onnx").write_bytes(payload)
    if lineage is not None:
        (vdir / "lineage.json").write_text(json.dumps(lineage), encoding="utf-8")
    return vdir


def test_scan_finds_models_and_versions(tmp_path):
    _version(tmp_path, "fraud", 1)
    _version(tmp_path, "fraud", 2)
    _version(tmp_path, "fraud", 10)
    _version(tmp_path, "churn", 3)
    (tmp_path / "empty").mkdir()

    models = scan_registry(tmp_path)

    assert sorted(models) == ["churn", "empty", "fraud"]
    fraud = models["fraud"]
    assert fraud.name == "fraud"
    assert fraud.path == tmp_path / "fraud"
    assert sorted(fraud.versions) == [1, 2, 10]
    v10 = fraud.versions[10]
    assert v10 == VersionDir("fraud", 10, tmp_path / "fraud" / "10")
    assert v10.model_file == tmp_path / "fraud" / "10" / "model.onnx"
    assert sorted(models["churn"].versions) == [3]
    assert models["empty"].versions == {}


def test_scan_empty_registry(tmp_path):
    assert scan_registry(tmp_path) == {}


def test_scan_ignores_hidden_files_and_odd_entries(tmp_path):
    _version(tmp_path, "good", 1)
    # Hidden directories at both levels: a publisher's temporary work.
    (tmp_path / ".tmp-publish" / "1").mkdir(parents=True)
    (tmp_path / ".tmp-publish" / "1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "good" / ".2.tmp").mkdir()
    # Files where directories are expected.
    (tmp_path / "README.md").write_text("hi", encoding="utf-8")
    (tmp_path / "good" / "3").write_text("a file named like a version", encoding="utf-8")
    (tmp_path / "good" / "model.toml").write_text("", encoding="utf-8")
    # Non-integer version directories.
    for name in ("latest", "0", "01", "1.0", "-1", "v2"):
        (tmp_path / "good" / name).mkdir()
    # A directory with an invalid model name.
    (tmp_path / "bad name").mkdir()
    (tmp_path / "bad name" / "1").mkdir()

    models = scan_registry(tmp_path)

    assert sorted(models) == ["good"]
    assert sorted(models["good"].versions) == [1]


def test_scan_skips_symlinked_model_dir_outside_registry(tmp_path):
    root = tmp_path / "registry"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    _version(outside, "evil", 1)
    os.symlink(outside / "evil", root / "evil", target_is_directory=True)
    _version(root, "good", 1)

    models = scan_registry(root)

    assert sorted(models) == ["good"]


def test_scan_keeps_symlinked_model_dir_inside_registry(tmp_path):
    root = tmp_path / "registry"
    _version(root, "real", 1)
    os.symlink(root / "real", root / "alias", target_is_directory=True)

    models = scan_registry(root)

    assert sorted(models) == ["alias", "real"]
    assert sorted(models["alias"].versions) == [1]


def test_scan_skips_symlinked_version_dir_outside_registry(tmp_path):
    root = tmp_path / "registry"
    _version(root, "fraud", 1)
    outside = _version(tmp_path / "elsewhere", "fraud", 2)
    os.symlink(outside, root / "fraud" / "2", target_is_directory=True)

    models = scan_registry(root)

    assert sorted(models["fraud"].versions) == [1]


def test_scan_skips_symlink_escaping_via_dotdot(tmp_path):
    root = tmp_path / "registry"
    root.mkdir()
    _version(tmp_path, "secret", 1)
    os.symlink("../secret", root / "secret", target_is_directory=True)

    assert scan_registry(root) == {}


def test_scan_works_when_registry_root_is_itself_a_symlink(tmp_path):
    real = tmp_path / "real-registry"
    _version(real, "fraud", 1)
    link = tmp_path / "registry"
    os.symlink(real, link, target_is_directory=True)

    models = scan_registry(link)

    assert sorted(models) == ["fraud"]
    assert sorted(models["fraud"].versions) == [1]


def test_scan_skips_dangling_symlink(tmp_path):
    root = tmp_path / "registry"
    _version(root, "good", 1)
    os.symlink(tmp_path / "missing", root / "gone", target_is_directory=True)

    assert sorted(scan_registry(root)) == ["good"]


# ---------------------------------------------------------------------------------------------
# VersionDir


def test_incomplete_when_model_file_missing(tmp_path):
    vdir = tmp_path / "m" / "1"
    vdir.mkdir(parents=True)
    reason = VersionDir("m", 1, vdir).incomplete_reason()
    assert reason is not None
    assert "model.onnx" in reason
    assert reason.startswith("incomplete")


def test_incomplete_when_model_file_is_a_directory(tmp_path):
    vdir = tmp_path / "m" / "1"
    (vdir / "model.onnx").mkdir(parents=True)
    assert VersionDir("m", 1, vdir).incomplete_reason() is not None


def test_complete_without_lineage(tmp_path):
    vdir = _version(tmp_path, "m", 1)
    version = VersionDir("m", 1, vdir)
    assert version.lineage() is None
    assert version.expected_sha256() is None
    assert version.incomplete_reason() is None


def test_complete_with_matching_sha256(tmp_path):
    payload = b"some model bytes"
    digest = hashlib.sha256(payload).hexdigest()
    vdir = _version(tmp_path, "m", 1, payload, lineage={"model_sha256": digest})
    version = VersionDir("m", 1, vdir)
    assert version.expected_sha256() == digest
    assert version.incomplete_reason() is None


def test_matching_sha256_is_case_insensitive(tmp_path):
    payload = b"some model bytes"
    digest = hashlib.sha256(payload).hexdigest().upper()
    vdir = _version(tmp_path, "m", 1, payload, lineage={"model_sha256": digest})
    assert VersionDir("m", 1, vdir).incomplete_reason() is None


def test_incomplete_when_sha256_mismatches(tmp_path):
    vdir = _version(tmp_path, "m", 1, b"real bytes", lineage={"model_sha256": "0" * 64})
    reason = VersionDir("m", 1, vdir).incomplete_reason()
    assert reason is not None
    assert "sha256" in reason
    assert "lineage.json" in reason
    actual = hashlib.sha256(b"real bytes").hexdigest()
    assert actual[:12] in reason
    assert "000000000000" in reason


def test_incomplete_when_file_changed_after_lineage(tmp_path):
    vdir = _version(
        tmp_path, "m", 1, b"v1", lineage={"model_sha256": hashlib.sha256(b"v1").hexdigest()}
    )
    version = VersionDir("m", 1, vdir)
    assert version.incomplete_reason() is None
    (vdir / "model.onnx").write_bytes(b"v1 truncat")
    assert "sha256" in (version.incomplete_reason() or "")


def test_lineage_without_model_sha256_is_complete(tmp_path):
    vdir = _version(tmp_path, "m", 1, lineage={"created_at": "2024-01-01", "parent_version": None})
    version = VersionDir("m", 1, vdir)
    assert version.lineage() == {"created_at": "2024-01-01", "parent_version": None}
    assert version.expected_sha256() is None
    assert version.incomplete_reason() is None


def test_lineage_with_invalid_json_raises_value_error(tmp_path):
    vdir = _version(tmp_path, "m", 1)
    (vdir / "lineage.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lineage\.json is not valid JSON"):
        VersionDir("m", 1, vdir).lineage()


def test_lineage_with_invalid_utf8_raises_value_error(tmp_path):
    vdir = _version(tmp_path, "m", 1)
    (vdir / "lineage.json").write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"lineage\.json"):
        VersionDir("m", 1, vdir).lineage()


@pytest.mark.parametrize("doc", [[], "text", 3, None])
def test_lineage_must_be_an_object(tmp_path, doc):
    vdir = _version(tmp_path, "m", 1)
    (vdir / "lineage.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=r"lineage\.json must hold a JSON object"):
        VersionDir("m", 1, vdir).lineage()


# ---------------------------------------------------------------------------------------------
# sha256_file


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 17])
def test_sha256_file_matches_hashlib(tmp_path, size):
    data = bytes((i * 7 + 3) % 256 for i in range(size)) if size < 5000 else os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_staged_files_a_crash_left_are_removed_once_old(tmp_path: Path) -> None:
    target = tmp_path / "routing.json"
    old = tmp_path / ".routing.json.abc123"
    fresh = tmp_path / ".routing.json.def456"  # another process's change in progress
    other = tmp_path / ".model.toml.xyz"
    for f in (old, fresh, other):
        f.write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_staged(target) == 1
    assert not old.exists() and fresh.exists() and other.exists()


def test_a_link_loop_refuses_its_own_entry_not_the_whole_scan(tmp_path):
    root = tmp_path / "registry"
    _version(root, "good", 1)
    _version(root, "evil", 1)
    os.symlink("routing.json", root / "evil" / "routing.json")  # points at itself
    os.symlink("model.toml", root / "evil" / "model.toml")

    models = scan_registry(root)

    assert sorted(models) == ["evil", "good"]
    assert models["good"].escaping == ()
    assert set(models["evil"].escaping) == {"routing.json", "model.toml"}
