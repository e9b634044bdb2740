"""Server settings and per-model configuration (``model.toml``).

Both are validated once into frozen dataclasses. Server settings come from the
command line, then ``MLSERVE_*`` environment variables, then defaults. A
``model.toml`` has one section per concern; an unknown section or key is an
error that names it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .names import is_valid_model_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "MLSERVE_"
MODEL_CONFIG_FILE = "model.toml"

# ----------------------------------------------------------------------------------------------
# Server settings


_INT64 = 1 << 63
_DAY = 86_400.0
# Upper bounds of the numeric settings: past these a value is a typo, and would fail later
# (a timer or a thread join overflows, a C integer), not at start. Inclusive.
_SETTING_MAXIMA: dict[str, float] = {
    "workers": 1024,
    "max_body_bytes": 1 << 40,
    "max_elements": 1 << 40,
    "max_header_bytes": 1 << 30,
    "drain_seconds": _DAY,
    "body_timeout_seconds": _DAY,
    "overload_delay_ms": 3_600_000,
    "inference_threads": 4096,
    "poll_seconds": _DAY,
    "full_scan_every": 1 << 31,
    "payload_max_bytes": 1 << 50,
    "payload_backups": 10_000,
    "payload_queue": 1 << 24,
}


@dataclass(frozen=True)
class ServerSettings:
    """Process-wide settings; see docs/configuration.md."""

    registry: Path = Path("registry")
    host: str = "127.0.0.1"
    port: int = 8080
    # gRPC Open Inference Protocol port, served by every worker beside HTTP (0: no gRPC).
    grpc_port: int = 0
    workers: int = 1
    log_level: str = "info"
    # Largest request body accepted, in bytes (413 beyond).
    max_body_bytes: int = 64 * 1024 * 1024
    # Largest tensor accepted, in elements, checked on the claimed shape before allocating.
    max_elements: int = 16 * 1024 * 1024
    # Largest request head (request line and headers), in bytes (431/414 beyond).
    max_header_bytes: int = 64 * 1024
    # Seconds given to in-flight requests on shutdown.
    drain_seconds: float = 30.0
    # Seconds a request's body (and a request's head, from the connection or its first
    # byte) may take to arrive; a body beyond it gets 408, a head the connection closed.
    body_timeout_seconds: float = 30.0
    # Event-loop delay (ms) above which new infer and explain requests are refused with
    # 503 overloaded + Retry-After, so admitted requests keep a latency bound (0: never).
    overload_delay_ms: float = 100.0
    # Threads that run inference for versions in "thread" mode (0: one per core).
    inference_threads: int = 0
    # Seconds between registry scans for new, changed and removed versions (0: never).
    poll_seconds: float = 2.0
    # Every this many scans, one reads every model and version directory; the scans between
    # read only what their directory and file times say changed (1: every scan reads all).
    full_scan_every: int = 30
    # Admin API bearer token (MLSERVE_ADMIN_TOKEN); empty: the admin API is refused.
    admin_token: str = field(default="", repr=False)
    # Where admin changes are audited (default: audit.jsonl in state_dir, else the registry).
    audit_log: str = ""
    # "on": per-request metrics, drift and data quality; "off": none of it on the request path.
    monitoring: str = "on"
    # "on": whole infer requests are answered from the HTTP protocol (http/fast_lane.py);
    # "off": every request through the ASGI application (same answers, slower).
    fast_lane: str = "on"
    # OpenTelemetry tracing (tracing/): "on", "off", or "auto" (on when OTEL_* variables ask).
    tracing: str = "auto"
    # Where worker processes share their monitoring state (set by the server for --workers > 1).
    worker_dir: str = ""
    # Routing state (each model's routing.json) and, unless audit_log says otherwise, the
    # audit log: a directory apart from the registry, which may then be read-only, and which
    # replicas may share. Empty: beside the registry (routing.json in each model directory).
    state_dir: str = ""
    # Serve the registry directory as this one model's directory (KServe: --model_name or
    # MODEL_NAME over /mnt/models); empty: the registry holds one directory per model.
    model_name: str = ""
    # Payload logging ([payloads] in model.toml): the directory (empty: off for every model),
    # the size a file is rotated at, rotated files kept per process, records waiting.
    payload_dir: str = ""
    payload_max_bytes: int = 64 * 1024 * 1024
    payload_backups: int = 10
    payload_queue: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if not 0 <= self.grpc_port < 65536 or (self.grpc_port and self.grpc_port == self.port):
            raise ConfigError(
                f"grpc_port must be in 1..65535 and not the HTTP port, or 0 for no gRPC, "
                f"got {self.grpc_port}"
            )
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.log_level not in {"critical", "error", "warning", "info", "debug", "trace"}:
            raise ConfigError(
                f"log_level must be one of critical/error/warning/info/debug/trace, "
                f"got {self.log_level!r}"
            )
        for name in ("max_body_bytes", "max_elements", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.drain_seconds >= 0:  # also rejects NaN
            raise ConfigError(f"drain_seconds must be >= 0, got {self.drain_seconds}")
        if not self.body_timeout_seconds > 0:
            raise ConfigError(f"body_timeout_seconds must be > 0, got {self.body_timeout_seconds}")
        if not self.poll_seconds >= 0:
            raise ConfigError(f"poll_seconds must be >= 0, got {self.poll_seconds}")
        if self.full_scan_every < 1:
            raise ConfigError(
                f"full_scan_every must be >= 1 (1: every scan reads the whole registry), "
                f"got {self.full_scan_every}"
            )
        if not self.overload_delay_ms >= 0:
            raise ConfigError(f"overload_delay_ms must be >= 0, got {self.overload_delay_ms}")
        if self.monitoring not in ("on", "off"):
            raise ConfigError(f"monitoring must be 'on' or 'off', got {self.monitoring!r}")
        if self.fast_lane not in ("on", "off"):
            raise ConfigError(f"fast_lane must be 'on' or 'off', got {self.fast_lane!r}")
        if self.tracing not in ("auto", "on", "off"):
            raise ConfigError(f"tracing must be 'auto', 'on' or 'off', got {self.tracing!r}")
        if self.model_name and not is_valid_model_name(self.model_name):
            raise ConfigError(
                f"model_name {self.model_name!r} is not a valid model name "
                "(letters, digits, '_', '.', '-')"
            )
        if self.inference_threads < 0:
            raise ConfigError(f"inference_threads must be >= 0, got {self.inference_threads}")
        for name in ("payload_max_bytes", "payload_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.payload_backups < 0:
            raise ConfigError(f"payload_backups must be >= 0, got {self.payload_backups}")
        for name, most in _SETTING_MAXIMA.items():
            value = getattr(self, name)
            if not value <= most:  # also NaN
                raise ConfigError(
                    f"{name} = {_shown(value)} is over the largest accepted value, {most:,.0f}"
                )
        token = self.admin_token
        if token and (token != token.strip() or not token.isprintable()):
            # Compared byte for byte (UTF-8, http/admin.py): such a token could never match
            # what a client sends, and would fail every admin call without saying why.
            raise ConfigError(
                "MLSERVE_ADMIN_TOKEN must not begin or end with whitespace, nor hold "
                "control or other non-printable characters (the token is not shown)"
            )

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServerSettings:
        """Settings from ``overrides`` (the CLI; ``None`` values ignored) > env > defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in {f.name for f in fields(cls)}:
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = value
        for f in fields(cls):  # overrides arrive typed from argparse or callers: check them
            if f.name in values and f.name != "registry":
                want = _OVERRIDE_TYPES[str(f.type)]
                value = values[f.name]
                if isinstance(value, bool) or not isinstance(value, want):
                    raise ConfigError(f"setting {f.name} must be {f.type}, got {value!r}")
        # KServe's own variables count only where no registry was chosen at all (KServe
        # passes --model_name and --model_dir): a stray MODEL_NAME must not turn a registry
        # into one model.
        if "registry" not in values:
            if "model_name" not in values and environ.get("MODEL_NAME"):
                values["model_name"] = environ["MODEL_NAME"]
            if values.get("model_name"):
                values["registry"] = _kserve_model_dir(environ.get("STORAGE_URI", ""))
        if "registry" in values:
            values["registry"] = Path(values["registry"])
        return cls(**values)

    def to_environ(self) -> dict[str, str]:
        """The settings as ``MLSERVE_*`` variables, so worker processes rebuild them."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


KSERVE_MODEL_DIR = "/mnt/models"


def _kserve_model_dir(storage_uri: str) -> str:
    """Where KServe's model is: a local ``STORAGE_URI`` as is, else the storage
    initializer's download directory."""
    if storage_uri.startswith("file://"):
        return storage_uri[len("file://") :]
    if storage_uri.startswith("/"):
        return storage_uri
    return KSERVE_MODEL_DIR


_OVERRIDE_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
}


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be a {kind}, got {raw!r}") from None
    return raw


# ----------------------------------------------------------------------------------------------
# model.toml

POLICIES = ("latest", "all", "specific")
EXEC_MODES = ("auto", "inline", "thread")
GRAPH_OPTIMIZATIONS = ("disabled", "basic", "extended", "all")
CAST_POLICIES = ("safe", "none")  # [inputs] cast (rules: runtime/columns.py)
IO_BINDING = ("auto", "on", "off")


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are loaded: ``latest`` n, ``all``, or ``specific``."""

    policy: str = "latest"
    latest: int = 1
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to load among ``available``, ascending."""
        ordered = sorted(available)
        if self.policy == "all":
            return ordered
        if self.policy == "specific":
            wanted = set(self.specific)
            return [v for v in ordered if v in wanted]
        return ordered[-self.latest :]


@dataclass(frozen=True)
class ExecutionConfig:
    """How a version's onnxruntime session is built and called."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    # auto: inline on the event loop when warm-up shows the model is fast, else a thread.
    mode: str = "auto"
    inline_threshold_us: float = 300.0
    warmup_runs: int = 5
    # onnxruntime IO binding: "auto" (the faster of bound and plain runs, timed at warm-up),
    # "on", "off".
    io_binding: str = "auto"
    # Session creation and warm-up of one version must end within this; else it is failed.
    load_timeout_s: float = 60.0
    # One request's (or batch's) session run on a worker thread (thread and batch modes)
    # is stopped after this and answered 504; 0: no limit. Inline runs cannot be stopped.
    run_timeout_s: float = 60.0


@dataclass(frozen=True)
class InputPolicy:
    """What a request may send."""

    allow_nan: bool = False
    max_rows: int = 10_000
    # Per-tensor element cap for this model; the server-wide cap applies when unset (0).
    max_elements: int = 0
    # Data of another datatype than the input's: "safe" casts what keeps its value (FP64 →
    # FP32, integers a float holds exactly, integral floats → integers), "none" refuses.
    cast: str = "safe"


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching of concurrent requests into one session run (off at size 1)."""

    max_batch_size: int = 1
    max_delay_us: int = 500
    # Requests waiting for this version (batched or thread mode) beyond which 503 answers.
    max_queue: int = 1024
    # A request still queued after this long gets 504 (0: no timeout).
    timeout_ms: float = 0.0


@dataclass(frozen=True)
class MonitoringConfig:
    """Which input holds the features, and the drift window and alert settings."""

    # The input whose columns are the features (default: the model's only 2-D input).
    features: str = ""
    window_buckets: int = 60
    bucket_seconds: float = 60.0
    # The version's false-alarm probability per window length (per hour at the defaults),
    # across every feature test of every section (monitoring/drift.py).
    alpha: float = 0.01
    # Rows a window needs before any drift alert.
    min_window: int = 200
    # Effect-size floors: an alert needs a significant AND a large change. PSI for every
    # feature; |AUC - 0.5| of the rank test for numeric ones (benchmarks/RESULTS.md).
    psi_floor: float = 0.1
    auc_floor: float = 0.05
    # Cap on the rows the significance tests count (0: none): beyond it the window's counts
    # are scaled down, so a busy model's threshold stops shrinking.
    max_window_rows: int = 0
    # Rows of one request binned into the drift windows (0: every row): a larger request
    # gives at most this many, each of its rows with the same chance; the tests count those.
    sample_rows: int = 256
    # Drift per segment of the traffic: a feature with few values ("region") or a request
    # parameter ("parameters.tenant"); the first max_segments values seen get windows of their
    # own, later ones share "other".
    segment_by: str = ""
    max_segments: int = 8
    enabled: bool = True


@dataclass(frozen=True)
class RoutingConfig:
    """Which versions take unpinned traffic: a stable one and an optional weighted canary."""

    # 0: the version that served first, pinned in the routing state (routing/controller.py)
    stable: int = 0
    canary: int = 0  # 0: no canary
    canary_weight: float = 0.0  # percent of unpinned requests
    shadows: tuple[int, ...] = ()  # versions that get mirrored copies of unpinned traffic
    shadow_sample: float = 1.0  # fraction of requests mirrored
    shadow_queue: int = 256  # mirrored copies waiting; beyond, copies are dropped and counted
    # With stable = 0: "off" keeps the pinned version; "latest-passing" serves the highest
    # ready version that may serve (a new version then takes traffic by itself).
    auto_promote: str = "off"


AUTO_PROMOTE = ("off", "latest-passing")
GUARDRAIL_SOURCES = ("local", "prometheus")


@dataclass(frozen=True)
class GuardrailConfig:
    """Automatic rollback (and optional promotion) of a canary against its stable version."""

    enabled: bool = False
    check_seconds: float = 5.0
    window_seconds: float = 60.0
    min_requests: int = 200  # canary requests in the window before any verdict
    max_failure_ratio: float = 2.0  # canary failure rate / stable failure rate
    max_p99_ratio: float = 1.5
    rollback_on_drift: bool = True
    promote_after_seconds: float = 0.0  # 0: never promote by itself
    steps: tuple[float, ...] = ()  # canary weights to step through before promoting
    # Whose traffic a verdict reads: "local" (this replica's workers) or "prometheus" (the
    # fleet's, from the shipped recording rules at prometheus_url; local when unreachable).
    source: str = "local"
    prometheus_url: str = ""
    prometheus_timeout_seconds: float = 2.0


@dataclass(frozen=True)
class GateConfig:
    """The validation gate (``mlserve validate``): criteria a version must pass to take traffic.

    A criterion left unset (``None``) is not checked.
    """

    # true: a version without a passing validation.json serves only as a shadow.
    require_gate: bool = False
    task: str = "auto"  # "classification" | "regression" | "auto" (from the outputs)
    label_output: str = ""  # the output holding predicted labels / values (default: guessed)
    score_output: str = ""  # the output holding class probabilities (default: guessed)
    positive_label: int = 1  # the favourable outcome for fairness and ROC AUC
    min_accuracy: float | None = None
    min_roc_auc: float | None = None
    max_mae: float | None = None
    max_rmse: float | None = None
    max_demographic_parity_difference: float | None = None
    max_equalized_odds_difference: float | None = None
    # Fairness is measured only with >= 2 groups of at least this many evaluation rows.
    min_group_rows: int = 30
    max_p99_ms_batch1: float | None = None
    max_p99_ms_batch: float | None = None
    latency_batch_size: int = 64
    latency_runs: int = 200
    golden: bool = True  # outputs on samples.npz's inputs must equal its outputs
    golden_tolerance: float = 1e-5
    min_agreement: float | None = None  # with the stable version, on the evaluation set
    agreement_tolerance: float = 1e-3  # |difference| counted as agreeing (regression)


@dataclass(frozen=True)
class PayloadConfig:
    """Sampled request/response logging for this model (needs the server's payload_dir)."""

    sample: float = 0.0  # fraction of successful requests logged (0: off)
    error_sample: float = 1.0  # fraction of failed requests logged
    fields: tuple[str, ...] = ("inputs", "outputs")  # of: inputs, outputs, parameters
    redact: tuple[str, ...] = ()  # input names whose values are never written


@dataclass(frozen=True)
class ModelConfig:
    """A model's ``model.toml``, validated."""

    versions: VersionPolicy = field(default_factory=VersionPolicy)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    inputs: InputPolicy = field(default_factory=InputPolicy)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    payloads: PayloadConfig = field(default_factory=PayloadConfig)


def parse_routing(table: Mapping[str, Any]) -> RoutingConfig:
    """Validate a routing table (``routing.json`` written by the admin API)."""
    if not isinstance(table, Mapping):
        raise ConfigError("routing must be a JSON object")
    routing: RoutingConfig = _section("routing", RoutingConfig, table)
    _check(ModelConfig(routing=routing))
    return routing


# Limits on a model.toml (a few hundred bytes, three levels deep: section, key, list).
MODEL_CONFIG_MAX_BYTES = 1 << 20
MODEL_CONFIG_MAX_DEPTH = 8


def load_model_config(model_dir: Path) -> ModelConfig:
    """Parse ``model_dir/model.toml``; defaults when the file is absent. Whatever is wrong
    with the file (unreadable, too large, not UTF-8, not TOML, nested too deep, a value of
    the wrong type) is a ``ConfigError`` that says so."""
    path = model_dir / MODEL_CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    try:
        with path.open("rb") as fh:
            data = fh.read(MODEL_CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: {exc}") from exc
    return parse_model_config(parse_model_toml(data))


def parse_model_toml(data: bytes) -> dict[str, Any]:
    """The TOML document in ``data`` (a model.toml's bytes), within the limits above."""
    if len(data) > MODEL_CONFIG_MAX_BYTES:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE} is too large: over {MODEL_CONFIG_MAX_BYTES // 1024} KiB"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: {exc}") from exc
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: values nest too deep (at most {MODEL_CONFIG_MAX_DEPTH} levels)"
        ) from None
    depth = _depth(doc)
    if depth > MODEL_CONFIG_MAX_DEPTH:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: values nest {depth} levels deep "
            f"(at most {MODEL_CONFIG_MAX_DEPTH})"
        )
    return doc


def _depth(doc: Any) -> int:
    """How deep lists and tables nest in ``doc`` (a scalar: 0), without recursion."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_model_config(doc: Mapping[str, Any]) -> ModelConfig:
    """Validate a parsed ``model.toml`` document."""
    sections = {
        "versions": VersionPolicy,
        "execution": ExecutionConfig,
        "inputs": InputPolicy,
        "batching": BatchingConfig,
        "monitoring": MonitoringConfig,
        "routing": RoutingConfig,
        "guardrails": GuardrailConfig,
        "gate": GateConfig,
        "payloads": PayloadConfig,
    }
    for name in doc:
        if name not in sections:
            raise ConfigError(
                f"{MODEL_CONFIG_FILE}: unknown section [{name}] (known: {', '.join(sections)})"
            )
    parts = {}
    for name, cls in sections.items():
        table = doc.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{MODEL_CONFIG_FILE}: [{name}] must be a table")
        parts[name] = _section(name, cls, table)
    config = ModelConfig(**parts)
    _check(config)
    return config


# What a list-valued key holds, by its field's annotation.
_LIST_ITEMS = {"tuple[str, ...]": "strings", "tuple[int, ...]": "integers",
               "tuple[float, ...]": "numbers"}  # fmt: skip


# Upper bounds of numeric keys, beyond what each key's own check says: a value past these
# is a typo or a test of the server, and would fail later (a thread join overflows past
# about 9.2e9 s, an allocation per bucket, a C integer), not at the scan. Inclusive.
_MAXIMA: dict[tuple[str, str], float] = {
    ("versions", "latest"): 1 << 20,
    ("execution", "intra_op_threads"): 1024,
    ("execution", "inter_op_threads"): 1024,
    ("execution", "warmup_runs"): 10_000,
    ("execution", "inline_threshold_us"): 60e6,
    ("execution", "load_timeout_s"): _DAY,
    ("execution", "run_timeout_s"): _DAY,
    ("inputs", "max_rows"): 1 << 31,
    ("inputs", "max_elements"): 1 << 40,
    ("batching", "max_batch_size"): 1 << 20,
    ("batching", "max_delay_us"): 10e6,
    ("batching", "max_queue"): 1 << 24,
    ("batching", "timeout_ms"): _DAY * 1000,
    ("monitoring", "window_buckets"): 10_000,
    ("monitoring", "bucket_seconds"): _DAY,
    ("monitoring", "min_window"): 1 << 31,
    ("monitoring", "max_window_rows"): 1 << 31,
    ("monitoring", "sample_rows"): 1 << 31,
    ("routing", "stable"): 1 << 62,
    ("routing", "canary"): 1 << 62,
    ("guardrails", "check_seconds"): _DAY,
    ("guardrails", "window_seconds"): 30 * _DAY,
    ("guardrails", "min_requests"): 1 << 40,
    ("guardrails", "max_failure_ratio"): 1e9,
    ("guardrails", "max_p99_ratio"): 1e9,
    ("guardrails", "promote_after_seconds"): 365 * _DAY,
    ("guardrails", "prometheus_timeout_seconds"): 300,
    ("gate", "positive_label"): 1 << 62,
    ("gate", "max_demographic_parity_difference"): 1,
    ("gate", "max_equalized_odds_difference"): 1,
    ("gate", "min_group_rows"): 1 << 31,
    ("gate", "max_p99_ms_batch1"): _DAY * 1000,
    ("gate", "max_p99_ms_batch"): _DAY * 1000,
    ("gate", "latency_batch_size"): 1 << 20,
    ("gate", "latency_runs"): 1_000_000,
}


def _shown(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{value:.3g}"


def _check_maxima(config: ModelConfig) -> None:
    """Every numeric key within ``_MAXIMA`` (NaN is over every bound)."""
    for (section, key), most in _MAXIMA.items():
        value = getattr(getattr(config, section), key)
        if value is None:
            continue
        if not value <= most:  # also NaN
            limit = f"{most:,.0f}" if most >= 1000 else f"{most:g}"
            raise ConfigError(
                f"{MODEL_CONFIG_FILE}: [{section}] {key} = {_shown(value)} is over the "
                f"largest accepted value, {limit}"
            )


def _section(name: str, cls: type, table: Mapping[str, Any]) -> Any:
    defaults = cls()
    values: dict[str, Any] = {}
    annotations = {f.name: str(f.type) for f in fields(cls)}
    known = set(annotations)
    for key, value in table.items():
        where = f"{MODEL_CONFIG_FILE}: [{name}] {key}"
        if key not in known:
            raise ConfigError(
                f"{MODEL_CONFIG_FILE}: unknown key {key!r} in [{name}] "
                f"(known: {', '.join(sorted(known))})"
            )
        default = getattr(defaults, key)
        if default is None:  # an optional number
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be an integer, got {value!r}")
            if not -_INT64 <= value < _INT64:  # numpy and onnxruntime take 64-bit integers
                raise ConfigError(f"{where} = {_shown(value)} is out of range (64-bit integers)")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            if isinstance(value, int) and not -_INT64 <= value < _INT64:
                raise ConfigError(f"{where} = {_shown(value)} is out of range (64-bit integers)")
            value = float(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string, got {value!r}")
        elif isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"{where} must be a list, got {value!r}")
            # Lists inside lists (or tables) are never right, and would break the checks
            # below (sets of them); lists of names hold strings. Numbers are checked later.
            items = _LIST_ITEMS.get(annotations[key], "values")
            for item in value:
                if isinstance(item, (list, Mapping)) or (
                    items == "strings" and not isinstance(item, str)
                ):
                    shown = repr(item) if len(repr(item)) <= 40 else type(item).__name__
                    raise ConfigError(f"{where} must be a list of {items}, got {shown} in it")
            value = tuple(value)
        values[key] = value
    return replace(defaults, **values)


MAX_SHADOWS = 16  # shadow versions one routing may name


def shadows_problem(shadows: Any) -> str | None:
    """The one rule for a routing's ``shadows`` (model.toml, routing.json, the admin API):
    a list of at most ``MAX_SHADOWS`` distinct versions, integers >= 1 (booleans are not
    integers here). None when they are fine, else what is wrong, briefly (the value at
    fault is named, never the whole list)."""
    if not isinstance(shadows, (list, tuple)):
        return f"shadows must be a list of versions, got {type(shadows).__name__}"
    if len(shadows) > MAX_SHADOWS:
        return f"shadows names {len(shadows)} versions: at most {MAX_SHADOWS}"
    seen: set[int] = set()
    for x in shadows:
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            shown = repr(x) if len(repr(x)) <= 40 else type(x).__name__
            return f"shadows must list versions (integers >= 1), got {shown}"
        if x in seen:
            return f"shadows names version {x} twice: each shadow version once"
        seen.add(x)
    return None


def _check(config: ModelConfig) -> None:
    _check_maxima(config)
    v, e, i, b = config.versions, config.execution, config.inputs, config.batching
    m, r = config.monitoring, config.routing
    if v.policy not in POLICIES:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [versions] policy must be one of "
            f"{', '.join(POLICIES)}, got {v.policy!r}"
        )
    if v.latest < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [versions] latest must be >= 1, got {v.latest}")
    if v.policy == "specific" and not v.specific:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [versions] policy 'specific' needs a non-empty 'specific' list"
        )
    if any(
        isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < _INT64 for x in v.specific
    ):
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [versions] specific must list positive "
            f"integers, got {list(v.specific)!r}"
        )
    if not e.providers or any(not isinstance(p, str) for p in e.providers):
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] providers must be a non-empty list of provider names"
        )
    if e.mode not in EXEC_MODES:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] mode must be one of "
            f"{', '.join(EXEC_MODES)}, got {e.mode!r}"
        )
    if e.graph_optimization not in GRAPH_OPTIMIZATIONS:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] graph_optimization must be one of "
            f"{', '.join(GRAPH_OPTIMIZATIONS)}, got {e.graph_optimization!r}"
        )
    if e.io_binding not in IO_BINDING:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] io_binding must be one of "
            f"{', '.join(IO_BINDING)}, got {e.io_binding!r}"
        )
    for key in ("intra_op_threads", "inter_op_threads"):
        if getattr(e, key) < 0:
            raise ConfigError(
                f"{MODEL_CONFIG_FILE}: [execution] {key} must be >= 0 (0: onnxruntime's default)"
            )
    if e.warmup_runs < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [execution] warmup_runs must be >= 1")
    if not e.inline_threshold_us >= 0:  # also rejects NaN
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [execution] inline_threshold_us must be >= 0")
    if not 0 < e.load_timeout_s < float("inf"):  # also rejects NaN
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] load_timeout_s must be a number of seconds > 0, "
            f"got {e.load_timeout_s!r}"
        )
    if not e.run_timeout_s >= 0:  # also rejects NaN
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [execution] run_timeout_s must be a number of seconds >= 0 "
            f"(0: no limit), got {e.run_timeout_s!r}"
        )
    if i.max_rows < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [inputs] max_rows must be >= 1")
    if i.max_elements < 0:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [inputs] max_elements must be >= 0")
    if i.cast not in CAST_POLICIES:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [inputs] cast must be one of {', '.join(CAST_POLICIES)}, "
            f"got {i.cast!r}"
        )
    if b.max_batch_size < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [batching] max_batch_size must be >= 1")
    if b.max_delay_us < 0:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [batching] max_delay_us must be >= 0")
    if b.max_queue < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [batching] max_queue must be >= 1")
    if not b.timeout_ms >= 0:  # also rejects NaN
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [batching] timeout_ms must be >= 0")
    if m.window_buckets < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] window_buckets must be >= 1")
    if not m.bucket_seconds > 0:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] bucket_seconds must be > 0")
    if not 0 < m.alpha < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] alpha must be in (0, 1)")
    if m.min_window < 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] min_window must be >= 1")
    if not 0 <= m.psi_floor < 10:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] psi_floor must be in [0, 10)")
    if not 0 <= m.auc_floor < 0.5:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] auc_floor must be in [0, 0.5)")
    if m.sample_rows < 0:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [monitoring] sample_rows must be 0 (every row) or more, "
            f"got {m.sample_rows}"
        )
    if not 1 <= m.max_segments <= 64:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [monitoring] max_segments must be in 1..64")
    if m.segment_by == "parameters." or m.segment_by.strip() != m.segment_by:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [monitoring] segment_by must name a feature or "
            f"parameters.<name>, got {m.segment_by!r}"
        )
    if m.max_window_rows < 0 or 0 < m.max_window_rows < m.min_window:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [monitoring] max_window_rows must be 0 (no cap) or at least "
            f"min_window ({m.min_window})"
        )
    if r.stable < 0 or r.canary < 0:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] stable and canary are versions (>= 1)")
    if not 0 <= r.canary_weight <= 100:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] canary_weight must be in 0..100")
    problem = shadows_problem(r.shadows)
    if problem is not None:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] {problem}")
    if not 0 <= r.shadow_sample <= 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] shadow_sample must be in 0..1")
    if not 1 <= r.shadow_queue <= 100_000:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] shadow_queue must be in 1..100000")
    if r.canary and r.canary == r.stable:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [routing] canary must differ from stable")
    if r.auto_promote not in AUTO_PROMOTE:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [routing] auto_promote must be one of "
            f"{', '.join(AUTO_PROMOTE)}, got {r.auto_promote!r}"
        )
    g = config.guardrails
    if not g.check_seconds > 0 or not g.window_seconds > 0:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [guardrails] check_seconds and window_seconds must be > 0"
        )
    if g.min_requests < 1 or not g.max_failure_ratio > 0 or not g.max_p99_ratio > 0:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [guardrails] min_requests and the ratios must be positive"
        )
    if any(not isinstance(w, (int, float)) or not 0 < w <= 100 for w in g.steps):
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [guardrails] steps are weights in (0, 100]")
    if g.source not in GUARDRAIL_SOURCES:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [guardrails] source must be one of "
            f"{', '.join(GUARDRAIL_SOURCES)}, got {g.source!r}"
        )
    if g.source == "prometheus" and not g.prometheus_url.startswith(("http://", "https://")):
        raise ConfigError(
            f'{MODEL_CONFIG_FILE}: [guardrails] source "prometheus" needs prometheus_url, '
            f"an http:// or https:// URL, got {g.prometheus_url!r}"
        )
    if not g.prometheus_timeout_seconds > 0:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [guardrails] prometheus_timeout_seconds must be > 0"
        )
    _check_gate(config.gate)
    p = config.payloads
    if not 0 <= p.sample <= 1 or not 0 <= p.error_sample <= 1:
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [payloads] sample and error_sample are in 0..1")
    unknown = sorted(set(p.fields) - set(PAYLOAD_FIELDS))
    if unknown:
        raise ConfigError(
            f"{MODEL_CONFIG_FILE}: [payloads] fields: unknown {unknown} "
            f"(known: {', '.join(PAYLOAD_FIELDS)})"
        )
    if any(not isinstance(n, str) or not n for n in p.redact):
        raise ConfigError(f"{MODEL_CONFIG_FILE}: [payloads] redact lists input names")


PAYLOAD_FIELDS = ("inputs", "outputs", "parameters")
GATE_TASKS = ("auto", "classification", "regression")


def _check_gate(g: GateConfig) -> None:
    where = f"{MODEL_CONFIG_FILE}: [gate]"
    if g.task not in GATE_TASKS:
        raise ConfigError(f"{where} task must be one of {', '.join(GATE_TASKS)}, got {g.task!r}")
    for key in ("min_accuracy", "min_roc_auc", "min_agreement"):
        value = getattr(g, key)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"{where} {key} must be in 0..1, got {value}")
    for key in (
        "max_mae",
        "max_rmse",
        "max_demographic_parity_difference",
        "max_equalized_odds_difference",
        "max_p99_ms_batch1",
        "max_p99_ms_batch",
    ):
        value = getattr(g, key)
        if value is not None and not value >= 0:
            raise ConfigError(f"{where} {key} must be >= 0, got {value}")
    if g.min_group_rows < 1:
        raise ConfigError(f"{where} min_group_rows must be >= 1")
    if g.latency_batch_size < 1 or g.latency_runs < 10:
        raise ConfigError(f"{where} latency_batch_size must be >= 1 and latency_runs >= 10")
    if not g.golden_tolerance >= 0 or not g.agreement_tolerance >= 0:
        raise ConfigError(f"{where} golden_tolerance and agreement_tolerance must be >= 0")
