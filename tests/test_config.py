"""Unit tests for mlserve.config: server settings and model.toml parsing."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
import tomllib

from mlserve import config as config_module
from mlserve.config import (
    ExecutionConfig,
    InputPolicy,
    ModelConfig,
    ServerSettings,
    VersionPolicy,
    load_model_config,
    parse_model_config,
)
from mlserve.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# ServerSettings.load


def test_load_defaults_with_empty_environ():
    settings = ServerSettings.load(environ={})
    assert settings == ServerSettings()
    assert settings.registry == Path("registry")
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.workers == 1
    assert settings.log_level == "info"
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert settings.max_elements == 16 * 1024 * 1024
    assert settings.drain_seconds == 30.0
    assert settings.inference_threads == 0


def test_load_ignores_process_environment_when_environ_given(monkeypatch):
    monkeypatch.setenv("MLSERVE_PORT", "9999")
    assert ServerSettings.load(environ={}).port == 8080
    # And without environ= the process environment is read.
    assert ServerSettings.load().port == 9999


def test_load_reads_every_setting_from_env():
    environ = {
        "MLSERVE_REGISTRY": "/srv/models",
        "MLSERVE_HOST": "0.0.0.0",
        "MLSERVE_PORT": "9000",
        "MLSERVE_WORKERS": "4",
        "MLSERVE_LOG_LEVEL": "debug",
        "MLSERVE_MAX_BODY_BYTES": "1024",
        "MLSERVE_MAX_ELEMENTS": "2048",
        "MLSERVE_DRAIN_SECONDS": "2.5",
        "MLSERVE_INFERENCE_THREADS": "3",
    }
    settings = ServerSettings.load(environ=environ)
    assert settings.registry == Path("/srv/models")
    assert isinstance(settings.registry, Path)
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.workers == 4
    assert settings.log_level == "debug"
    assert settings.max_body_bytes == 1024
    assert settings.max_elements == 2048
    assert settings.drain_seconds == 2.5
    assert isinstance(settings.drain_seconds, float)
    assert settings.inference_threads == 3


def test_load_overrides_beat_env_and_env_beats_defaults():
    environ = {"MLSERVE_PORT": "9000", "MLSERVE_WORKERS": "3", "MLSERVE_HOST": "0.0.0.0"}
    settings = ServerSettings.load({"port": 9100, "registry": "/tmp/reg"}, environ=environ)
    assert settings.port == 9100  # override wins over env
    assert settings.workers == 3  # env wins over default
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "info"  # default
    assert settings.registry == Path("/tmp/reg")
    assert isinstance(settings.registry, Path)


def test_load_none_overrides_are_ignored():
    environ = {"MLSERVE_PORT": "9000"}
    settings = ServerSettings.load(
        {"port": None, "workers": None, "log_level": None, "registry": None}, environ=environ
    )
    assert settings.port == 9000
    assert settings.workers == 1
    assert settings.log_level == "info"
    assert settings.registry == Path("registry")


def test_load_empty_env_value_is_ignored():
    assert ServerSettings.load(environ={"MLSERVE_PORT": ""}).port == 8080


def test_load_ignores_unrelated_env():
    settings = ServerSettings.load(environ={"PORT": "1", "MLSERVE_UNKNOWN": "x"})
    assert settings == ServerSettings()


def test_load_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        ServerSettings.load({"prot": 1}, environ={})


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("MLSERVE_PORT", "abc"),
        ("MLSERVE_PORT", "80.5"),
        ("MLSERVE_WORKERS", "two"),
        ("MLSERVE_MAX_ELEMENTS", "1e6"),
        ("MLSERVE_DRAIN_SECONDS", "soon"),
    ],
)
def test_load_bad_env_value_names_the_variable(var, raw):
    with pytest.raises(ConfigError, match=re.escape(var)) as info:
        ServerSettings.load(environ={var: raw})
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("environ", "pattern"),
    [
        ({"MLSERVE_PORT": "0"}, r"port must be in 1\.\.65535, got 0"),
        ({"MLSERVE_PORT": "65536"}, r"port must be in 1\.\.65535, got 65536"),
        ({"MLSERVE_PORT": "-1"}, r"port must be in"),
        ({"MLSERVE_WORKERS": "0"}, r"workers must be >= 1, got 0"),
        ({"MLSERVE_LOG_LEVEL": "loud"}, r"log_level must be one of .*'loud'"),
        ({"MLSERVE_MAX_BODY_BYTES": "0"}, r"max_body_bytes must be >= 1, got 0"),
        ({"MLSERVE_MAX_ELEMENTS": "-5"}, r"max_elements must be >= 1, got -5"),
        ({"MLSERVE_DRAIN_SECONDS": "-0.5"}, r"drain_seconds must be >= 0, got -0\.5"),
        ({"MLSERVE_INFERENCE_THREADS": "-1"}, r"inference_threads must be >= 0, got -1"),
    ],
)
def test_load_invalid_env_values_rejected(environ, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ServerSettings.load(environ=environ)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"port": 0}, r"port must be in"),
        ({"port": 70000}, r"port must be in"),
        ({"workers": 0}, r"workers must be >= 1"),
        ({"log_level": "verbose"}, r"log_level must be one of"),
    ],
)
def test_load_invalid_overrides_rejected(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ServerSettings.load(overrides, environ={})


def test_invalid_override_rejected_even_when_env_is_valid():
    with pytest.raises(ConfigError, match="port must be in"):
        ServerSettings.load({"port": 0}, environ={"MLSERVE_PORT": "9000"})


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace"])
def test_all_log_levels_accepted(level):
    assert ServerSettings.load(environ={"MLSERVE_LOG_LEVEL": level}).log_level == level


def test_boundary_values_accepted():
    settings = ServerSettings.load(
        environ={
            "MLSERVE_PORT": "65535",
            "MLSERVE_MAX_BODY_BYTES": "1",
            "MLSERVE_MAX_ELEMENTS": "1",
            "MLSERVE_DRAIN_SECONDS": "0",
        }
    )
    assert settings.port == 65535
    assert settings.max_body_bytes == 1
    assert settings.max_elements == 1
    assert settings.drain_seconds == 0.0


def test_settings_are_frozen():
    settings = ServerSettings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_to_environ_has_every_field_as_string():
    env = ServerSettings().to_environ()
    assert set(env) == {"MLSERVE_" + f.name.upper() for f in fields(ServerSettings)}
    assert all(isinstance(v, str) for v in env.values())
    assert env["MLSERVE_PORT"] == "8080"
    assert env["MLSERVE_REGISTRY"] == "registry"


@pytest.mark.parametrize(
    "settings",
    [
        ServerSettings(),
        ServerSettings(
            registry=Path("/srv/reg istry"),
            host="::1",
            port=1,
            workers=8,
            log_level="trace",
            max_body_bytes=12345,
            max_elements=7,
            drain_seconds=0.25,
            inference_threads=16,
        ),
    ],
)
def test_to_environ_round_trips_through_load(settings):
    rebuilt = ServerSettings.load(environ=settings.to_environ())
    assert rebuilt == settings
    for f in fields(ServerSettings):
        assert type(getattr(rebuilt, f.name)) is type(getattr(settings, f.name)), f.name


# ---------------------------------------------------------------------------------------------
# model.toml: defaults and sections


def test_load_model_config_defaults_when_no_file(tmp_path):
    assert load_model_config(tmp_path) == ModelConfig()


def test_model_config_defaults():
    config = parse_model_config({})
    assert config == ModelConfig()
    assert config.versions == VersionPolicy(policy="latest", latest=1, specific=())
    assert config.execution == ExecutionConfig(
        providers=("CPUExecutionProvider",),
        intra_op_threads=1,
        inter_op_threads=1,
        graph_optimization="all",
        mode="auto",
        inline_threshold_us=300.0,
        warmup_runs=5,
    )
    assert config.inputs == InputPolicy(allow_nan=False, max_rows=10_000, max_elements=0)


def test_empty_sections_give_defaults():
    assert parse_model_config({"versions": {}, "execution": {}, "inputs": {}}) == ModelConfig()


def test_load_model_config_reads_every_key(tmp_path):
    (tmp_path / "model.toml").write_text(
        """
[versions]
policy = "specific"
latest = 3
specific = [1, 3]

[execution]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
intra_op_threads = 4
inter_op_threads = 0
graph_optimization = "basic"
mode = "thread"
inline_threshold_us = 150
warmup_runs = 2

[inputs]
allow_nan = true
max_rows = 64
max_elements = 4096
""",
        encoding="utf-8",
    )
    config = load_model_config(tmp_path)
    assert config.versions == VersionPolicy(policy="specific", latest=3, specific=(1, 3))
    assert config.execution == ExecutionConfig(
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
        intra_op_threads=4,
        inter_op_threads=0,
        graph_optimization="basic",
        mode="thread",
        inline_threshold_us=150.0,
        warmup_runs=2,
    )
    assert isinstance(config.execution.inline_threshold_us, float)
    assert isinstance(config.execution.providers, tuple)
    assert isinstance(config.versions.specific, tuple)
    assert config.inputs == InputPolicy(allow_nan=True, max_rows=64, max_elements=4096)


def test_partial_section_keeps_other_defaults():
    config = parse_model_config({"execution": {"mode": "inline"}, "inputs": {"max_rows": 5}})
    assert config.execution.mode == "inline"
    assert config.execution.warmup_runs == 5
    assert config.execution.providers == ("CPUExecutionProvider",)
    assert config.inputs.max_rows == 5
    assert config.inputs.allow_nan is False
    assert config.versions == VersionPolicy()


@pytest.mark.parametrize("policy", ["latest", "all", "specific"])
def test_every_policy_accepted(policy):
    section = {"policy": policy}
    if policy == "specific":
        section["specific"] = [2]
    assert parse_model_config({"versions": section}).versions.policy == policy


@pytest.mark.parametrize("mode", ["auto", "inline", "thread"])
def test_every_mode_accepted(mode):
    assert parse_model_config({"execution": {"mode": mode}}).execution.mode == mode


@pytest.mark.parametrize("level", ["disabled", "basic", "extended", "all"])
def test_every_graph_optimization_accepted(level):
    config = parse_model_config({"execution": {"graph_optimization": level}})
    assert config.execution.graph_optimization == level


# ---------------------------------------------------------------------------------------------
# model.toml: errors


@pytest.mark.parametrize("section", ["batch", "Versions", "route", "input"])
def test_unknown_section_is_named(section):
    with pytest.raises(ConfigError, match=rf"unknown section \[{section}\]"):
        parse_model_config({section: {}})


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("versions", "polciy"),
        ("execution", "threads"),
        ("inputs", "max_rowz"),
        ("inputs", "allow_NaN"),
    ],
)
def test_unknown_key_is_named_with_its_section(section, key):
    with pytest.raises(ConfigError, match=rf"unknown key '{key}' in \[{section}\]"):
        parse_model_config({section: {key: 1}})


def test_unknown_key_via_file_is_named(tmp_path):
    (tmp_path / "model.toml").write_text("[inputs]\nmax_rowz = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"max_rowz"):
        load_model_config(tmp_path)


def test_top_level_key_is_an_unknown_section():
    with pytest.raises(ConfigError, match=r"unknown section \[policy\]"):
        parse_model_config({"policy": "all"})


@pytest.mark.parametrize("section", ["versions", "execution", "inputs"])
def test_section_must_be_a_table(section):
    with pytest.raises(ConfigError, match=rf"\[{section}\] must be a table"):
        parse_model_config({section: 3})


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        # string for int
        ("inputs", "max_rows", "10", r"\[inputs\] max_rows must be an integer, got '10'"),
        ("versions", "latest", "2", r"\[versions\] latest must be an integer"),
        # bool for int
        ("inputs", "max_rows", True, r"\[inputs\] max_rows must be an integer, got True"),
        ("execution", "warmup_runs", False, r"\[execution\] warmup_runs must be an integer"),
        # float for int
        ("execution", "intra_op_threads", 1.5, r"intra_op_threads must be an integer"),
        # int for bool
        ("inputs", "allow_nan", 1, r"\[inputs\] allow_nan must be true or false, got 1"),
        ("inputs", "allow_nan", "true", r"allow_nan must be true or false"),
        # wrong types for float
        ("execution", "inline_threshold_us", "300", r"inline_threshold_us must be a number"),
        ("execution", "inline_threshold_us", True, r"inline_threshold_us must be a number"),
        # wrong types for str
        ("versions", "policy", 1, r"\[versions\] policy must be a string, got 1"),
        ("execution", "mode", True, r"\[execution\] mode must be a string"),
        # wrong types for list
        ("execution", "providers", "CPUExecutionProvider", r"providers must be a list"),
        ("versions", "specific", 3, r"\[versions\] specific must be a list"),
    ],
)
def test_wrong_types_rejected(section, key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_model_config({section: {key: value}})


@pytest.mark.parametrize(
    ("doc", "pattern"),
    [
        ({"versions": {"policy": "newest"}}, r"policy must be one of .*'newest'"),
        ({"versions": {"policy": "LATEST"}}, r"policy must be one of"),
        ({"execution": {"mode": "fast"}}, r"mode must be one of .*'fast'"),
        ({"execution": {"graph_optimization": "max"}}, r"graph_optimization must be one of"),
        ({"versions": {"latest": 0}}, r"latest must be >= 1, got 0"),
        ({"execution": {"intra_op_threads": -1}}, r"intra_op_threads must be >= 0"),
        ({"execution": {"inter_op_threads": -2}}, r"inter_op_threads must be >= 0"),
        ({"execution": {"warmup_runs": 0}}, r"warmup_runs must be >= 1"),
        ({"execution": {"inline_threshold_us": -1.0}}, r"inline_threshold_us must be >= 0"),
        ({"execution": {"providers": []}}, r"providers must be a non-empty list"),
        ({"execution": {"providers": ["CPUExecutionProvider", 3]}}, r"providers must be"),
        ({"inputs": {"max_rows": 0}}, r"max_rows must be >= 1"),
        ({"inputs": {"max_elements": -1}}, r"max_elements must be >= 0"),
    ],
)
def test_invalid_values_rejected(doc, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_model_config(doc)


@pytest.mark.parametrize(
    ("specific", "pattern"),
    [
        (None, r"policy 'specific' needs a non-empty 'specific' list"),
        ([], r"policy 'specific' needs a non-empty 'specific' list"),
        ([0], r"specific must list positive integers, got \[0\]"),
        ([1, -3], r"specific must list positive integers"),
        (["1"], r"specific must list positive integers"),
        ([1.0], r"specific must list positive integers"),
        ([True], r"specific must list positive integers"),
    ],
)
def test_specific_policy_needs_positive_int_list(specific, pattern):
    section: dict = {"policy": "specific"}
    if specific is not None:
        section["specific"] = specific
    with pytest.raises(ConfigError, match=pattern):
        parse_model_config({"versions": section})


def test_specific_list_checked_even_with_other_policy():
    with pytest.raises(ConfigError, match=r"specific must list positive integers"):
        parse_model_config({"versions": {"policy": "latest", "specific": [0]}})


@pytest.mark.parametrize(
    "text",
    [
        "[versions\npolicy = 'all'\n",
        "[versions]\npolicy = \n",
        "[inputs]\nmax_rows = 1\nmax_rows = 2\n",
        "not toml at all",
    ],
)
def test_malformed_toml_is_a_config_error(tmp_path, text):
    (tmp_path / "model.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^model\.toml: "):
        load_model_config(tmp_path)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------------
# VersionPolicy.select


@pytest.mark.parametrize(
    ("policy", "available", "expected"),
    [
        (VersionPolicy(), [1, 2, 3], [3]),
        (VersionPolicy(policy="latest", latest=1), [3, 10, 2], [10]),
        (VersionPolicy(policy="latest", latest=2), [3, 1, 2], [2, 3]),
        (VersionPolicy(policy="latest", latest=2), [7], [7]),
        (VersionPolicy(policy="latest", latest=5), [2, 1], [1, 2]),
        (VersionPolicy(policy="latest", latest=2), [], []),
        (VersionPolicy(policy="all"), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy(policy="all"), [], []),
        (VersionPolicy(policy="specific", specific=(1, 3)), [1, 2, 3], [1, 3]),
        (VersionPolicy(policy="specific", specific=(3, 1)), [3, 2, 1], [1, 3]),
        # A wanted version that is absent is simply not selected.
        (VersionPolicy(policy="specific", specific=(2, 9)), [1, 2, 3], [2]),
        (VersionPolicy(policy="specific", specific=(9,)), [1, 2, 3], []),
    ],
)
def test_version_policy_select(policy, available, expected):
    assert policy.select(list(available)) == expected


def test_version_policy_select_does_not_mutate_input():
    available = [3, 1, 2]
    VersionPolicy(policy="all").select(available)
    assert available == [3, 1, 2]


def test_parsed_latest_policy_selects():
    config = parse_model_config({"versions": {"policy": "latest", "latest": 2}})
    assert config.versions.select([1, 2, 3]) == [2, 3]


def test_kserve_variables_apply_only_without_a_chosen_registry(tmp_path: Path) -> None:
    env = {"MODEL_NAME": "credit", "STORAGE_URI": f"file://{tmp_path}"}
    settings = ServerSettings.load(environ=env)
    assert (settings.model_name, settings.registry) == ("credit", tmp_path)
    # an explicit registry: a stray MODEL_NAME does not turn it into one model
    chosen = ServerSettings.load({"registry": str(tmp_path / "reg")}, environ=env)
    assert (chosen.model_name, chosen.registry) == ("", tmp_path / "reg")
    # the image sets MLSERVE_REGISTRY: then only --model_name makes one model
    image = ServerSettings.load(environ={**env, "MLSERVE_REGISTRY": "/mnt/models"})
    assert (image.model_name, image.registry) == ("", Path("/mnt/models"))
    remote = ServerSettings.load(environ={"MODEL_NAME": "m", "STORAGE_URI": "gs://b/m"})
    assert remote.registry == Path("/mnt/models")
    with pytest.raises(ConfigError, match="not a valid model name"):
        ServerSettings.load({"model_name": "../x"}, environ={})


# Gate thresholds compared with a measured metric only: any finite value means what it says.
_METRIC_THRESHOLDS = {
    ("gate", "max_mae"),
    ("gate", "max_rmse"),
    ("gate", "golden_tolerance"),
    ("gate", "agreement_tolerance"),
}
_SECTIONS = {
    "versions": VersionPolicy,
    "execution": ExecutionConfig,
    "inputs": InputPolicy,
    "batching": config_module.BatchingConfig,
    "monitoring": config_module.MonitoringConfig,
    "routing": config_module.RoutingConfig,
    "guardrails": config_module.GuardrailConfig,
    "gate": config_module.GateConfig,
    "payloads": config_module.PayloadConfig,
}


def _numeric_keys() -> list[tuple[str, str, bool]]:
    """(section, key, is an integer) of every numeric model.toml key, from the dataclasses."""
    out = []
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            default = getattr(cls(), f.name)
            if isinstance(default, bool) or not isinstance(default, (int, float, type(None))):
                continue
            if (section, f.name) not in _METRIC_THRESHOLDS:
                out.append((section, f.name, isinstance(default, int)))
    return out


@pytest.mark.parametrize("which", ["big", "huge"])
@pytest.mark.parametrize(("section", "key", "integer"), _numeric_keys())
def test_every_numeric_key_refuses_a_huge_value(section, key, integer, which):
    """A value that passed the scan and failed later (a thread join's OverflowError past
    ~9.2e9 s, the monitor answering 500 on an int64 overflow) is refused at the scan,
    naming the key. Integers: the largest int64 (over every key's own bound) and one past
    int64; numbers: 1e10 and 1e300."""
    if integer:
        value = str(2**63 - 1) if which == "big" else str(10**20)
    else:
        value = "1e10" if which == "big" else "1e300"
    with pytest.raises(ConfigError, match=rf"\[{section}\] (.* )?{key}\b"):
        parse_model_config(tomllib.loads(f"[{section}]\n{key} = {value}\n"))


def test_the_reported_overflows_are_refused_with_the_bound():
    for text, bound in [
        ("[execution]\nload_timeout_s = 1e10\n", "86,400"),
        ("[monitoring]\nsample_rows = 9999999999\n", "2,147,483,648"),
    ]:
        with pytest.raises(ConfigError, match=f"over the largest accepted value, {bound}$"):
            parse_model_config(tomllib.loads(text))
    with pytest.raises(ConfigError, match=r"sample_rows = 100000000000000000000 is out of range"):
        parse_model_config(tomllib.loads("[monitoring]\nsample_rows = 100000000000000000000\n"))
    with pytest.raises(
        ConfigError, match=r"load_timeout_s = 100000000000000000000 is out of range"
    ):
        parse_model_config(tomllib.loads("[execution]\nload_timeout_s = 100000000000000000000\n"))
    # At the bounds: accepted.
    doc = "[execution]\nload_timeout_s = 86400\n[monitoring]\nsample_rows = 2147483648\n"
    assert parse_model_config(tomllib.loads(doc)).monitoring.sample_rows == 2**31


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("workers", 10**6),
        ("drain_seconds", 1e10),
        ("body_timeout_seconds", 1e10),
        ("poll_seconds", 1e300),
        ("overload_delay_ms", 1e12),
        ("inference_threads", 10**20),
        ("full_scan_every", 10**20),
        ("payload_queue", 10**20),
        ("payload_backups", 10**20),
        ("max_body_bytes", 10**20),
        ("max_elements", 10**20),
        ("max_header_bytes", 10**20),
        ("payload_max_bytes", 10**20),
    ],
)
def test_numeric_settings_refuse_a_huge_value(name, value):
    with pytest.raises(ConfigError, match=rf"^{name} = .* over the largest accepted value"):
        ServerSettings.load(overrides={name: value}, environ={})


def test_run_timeout_s_is_read_and_checked():
    def execution(text: str) -> ExecutionConfig:
        return parse_model_config(tomllib.loads(f"[execution]\n{text}\n")).execution

    assert execution("run_timeout_s = 2.5").run_timeout_s == 2.5
    assert execution("").run_timeout_s == 60.0
    assert execution("run_timeout_s = 0").run_timeout_s == 0
    with pytest.raises(ConfigError, match=r"run_timeout_s must be a number of seconds >= 0"):
        execution("run_timeout_s = -1")
