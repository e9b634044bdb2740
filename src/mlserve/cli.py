"""``mlserve`` command line: a thin layer that builds settings and calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import ServerSettings
from .errors import ConfigError
from .tracing import check as check_tracing

DEFAULT_DEMO_DIR = "mlserve-demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlserve", description="ONNX model server speaking the Open Inference Protocol."
    )
    parser.add_argument("--version", action="version", version=f"mlserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a model registry directory")
    serve.add_argument("--registry", help="registry directory (env MLSERVE_REGISTRY)")
    kserve = serve.add_argument_group(
        "KServe", "the arguments a KServe ServingRuntime passes (see deploy/kserve)"
    )
    kserve.add_argument(
        "--model_name",
        "--model-name",
        dest="model_name",
        help="serve the registry directory as this one model's versions (env MODEL_NAME)",
    )
    kserve.add_argument(
        "--model_dir", dest="registry", help="the model directory (default /mnt/models)"
    )
    kserve.add_argument("--http_port", dest="port", type=int, help="same as --port")
    kserve.add_argument("--grpc_port", dest="grpc_port", type=int, help="same as --grpc-port")
    _server_options(serve)

    demo = sub.add_parser("demo", help="build the demo registry if missing, then serve it")
    demo.add_argument(
        "--dir", default=DEFAULT_DEMO_DIR, help=f"demo workspace (default ./{DEFAULT_DEMO_DIR})"
    )
    demo.add_argument("--rebuild", action="store_true", help="retrain the demo models")
    demo.add_argument("--build-only", action="store_true", help="build, print the path, exit")
    _server_options(demo)

    prof = sub.add_parser(
        "profile", help="write a reference profile (reference.json) for drift monitoring"
    )
    _profile_options(prof)
    pub = sub.add_parser(
        "publish", help="publish an estimator or ONNX file as the next version of a model"
    )
    _publish_options(pub)
    val = sub.add_parser(
        "validate", help="run a version against an evaluation set and its model's [gate]"
    )
    _validate_options(val)
    audit = sub.add_parser("audit", help="check the admin audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="verify the hash chain of an audit log")
    verify.add_argument("file", help="the audit log (audit.jsonl in the registry by default)")
    payloads = sub.add_parser("payloads", help="work with the payload log (--payload-dir)")
    payloads_sub = payloads.add_subparsers(dest="payloads_command", required=True)
    _payload_export_options(
        payloads_sub.add_parser(
            "export", help="write logged requests of a model as an evaluation set (.npz/.parquet)"
        )
    )
    _predict_options(
        sub.add_parser("predict", help="score a data file against a running server (batch)")
    )
    return parser


def _payload_export_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve payloads export`` (``governance.payload_export.export_payloads``)."""
    p.add_argument("--dir", required=True, type=Path, help="the payload directory")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, dest="model_version", help="one version only")
    p.add_argument("--since", metavar="TIME", help="ISO 8601 timestamp or unix seconds")
    p.add_argument("--until", metavar="TIME", help="ISO 8601 timestamp or unix seconds")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help=".npz or .parquet")
    p.add_argument("--input", dest="input_name", metavar="NAME", help="the feature input")
    p.add_argument(
        "--registry", type=Path, help="take feature names from the versions' reference.json"
    )
    labels = p.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels", type=Path, metavar="CSV", help="labels: columns id,label[,row][,group]"
    )
    labels.add_argument(
        "--label-output", metavar="NAME", help="use this served output as y (pseudo-labels)"
    )


def _profile_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve profile`` (see ``mlserve.reference_data.profile_from_file``)."""
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="FILE",
        help="reference data: .npz, .csv or .parquet",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory to write reference.json to (made if missing)",
    )
    p.add_argument(
        "--input-key",
        metavar="KEY",
        help="the .npz array to profile (default X, else X_train, else the 2-D one)",
    )
    p.add_argument(
        "--feature-names",
        type=_names,
        metavar="A,B,...",
        help="column names, for data files without any",
    )
    p.add_argument(
        "--categorical",
        type=_names,
        default=[],
        metavar="A,B,...",
        help="features profiled by level (CSV/parquet text columns always are)",
    )
    p.add_argument(
        "--model", type=Path, metavar="ONNX", help="also profile this model's outputs on the data"
    )
    p.add_argument(
        "--dtype",
        choices=("FP32", "FP64"),
        default="FP32",
        help="without --model: the datatype numeric features are cast to before binning, as "
        "the model will receive them (FP32, what skl2onnx exports)",
    )
    p.add_argument("--bins", type=int, default=10, help="bins per numeric feature (10)")
    p.add_argument(
        "--top-k",
        type=int,
        default=20,
        metavar="K",
        help="levels kept per categorical feature (20)",
    )


def _publish_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve publish`` (see ``mlserve.governance.publish.publish``)."""
    p.add_argument("--registry", required=True, type=Path, help="registry directory")
    p.add_argument("--model", required=True, help="model name (its directory in the registry)")
    p.add_argument(
        "--estimator",
        type=Path,
        metavar="FILE",
        help="fitted scikit-learn estimator (joblib/pickle; loading it runs code: trusted files "
        "only)",
    )
    p.add_argument("--onnx", type=Path, metavar="FILE", help="an ONNX model to publish as is")
    p.add_argument(
        "--reference", required=True, type=Path, metavar="FILE", help=".npz, .csv or .parquet"
    )
    p.add_argument("--input-key", metavar="KEY", help="the .npz array holding the features")
    p.add_argument("--feature-names", type=_names, metavar="A,B,...")
    p.add_argument("--categorical", type=_names, default=[], metavar="A,B,...")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed difference between onnxruntime and the estimator (1e-4)",
    )
    p.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--parent", type=int, help="parent version (default: the latest)")


def _validate_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve validate`` (see ``mlserve.governance.gate.validate_version``)."""
    p.add_argument("--registry", required=True, type=Path, help="registry directory")
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True, type=int, dest="model_version")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="FILE",
        help="evaluation set: .npz (X, y, group) or .csv/.parquet (feature columns, y or "
        "label, group)",
    )
    p.add_argument("--label", metavar="NAME", help="label array/column (default: y, else label)")
    p.add_argument("--group", metavar="NAME", help="sensitive-attribute array/column (group)")
    p.add_argument("--input-key", metavar="KEY", help="the .npz array holding the features")
    p.add_argument(
        "--dry-run", action="store_true", help="print the table, do not write validation.json"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write a failing validation.json even for a version that serves unpinned "
        "traffic (with require_gate it then stops serving)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="the server's --state-dir, where the routing state lives (default: the registry)",
    )


def _pairs(items: list[str], what: str, number: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{what} takes NAME=VALUE, got {item!r}")
        out[key] = float(value) if number else value
    return out


def _names(text: str) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]``."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default 127.0.0.1; env MLSERVE_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080; env MLSERVE_PORT)")
    p.add_argument(
        "--grpc-port",
        dest="grpc_port",
        type=int,
        help="also serve the Open Inference Protocol over gRPC on this port, from every "
        "worker (default 0: no gRPC; env MLSERVE_GRPC_PORT)",
    )
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument(
        "--log-level",
        dest="log_level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    p.add_argument("--max-elements", dest="max_elements", type=int)
    p.add_argument(
        "--max-header-bytes",
        dest="max_header_bytes",
        type=int,
        help="largest request head (request line and headers); 431/414 beyond "
        "(default 65536; env MLSERVE_MAX_HEADER_BYTES)",
    )
    p.add_argument("--drain-seconds", dest="drain_seconds", type=float)
    p.add_argument(
        "--body-timeout-seconds",
        dest="body_timeout_seconds",
        type=float,
        help="seconds a request body (or head) may take to arrive; 408 beyond "
        "(default 30; env MLSERVE_BODY_TIMEOUT_SECONDS)",
    )
    p.add_argument(
        "--overload-delay-ms",
        dest="overload_delay_ms",
        type=float,
        help="event-loop delay beyond which new inference requests get 503 overloaded "
        "(default 100; 0: never; env MLSERVE_OVERLOAD_DELAY_MS)",
    )
    p.add_argument("--inference-threads", dest="inference_threads", type=int)
    p.add_argument(
        "--monitoring",
        choices=["on", "off"],
        help="per-request metrics and drift (default on; env MLSERVE_MONITORING)",
    )
    p.add_argument(
        "--fast-lane",
        dest="fast_lane",
        choices=["on", "off"],
        help="answer whole infer requests from the HTTP protocol, without the ASGI cycle "
        "(default on; env MLSERVE_FAST_LANE)",
    )
    p.add_argument(
        "--tracing",
        choices=["auto", "on", "off"],
        help="OpenTelemetry spans per request, exported as the OTEL_* variables say (needs "
        "mlserve[otel]); auto: on when OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_SERVICE_NAME or OTEL_TRACES_SAMPLER is set (default auto; env MLSERVE_TRACING)",
    )
    p.add_argument(
        "--poll-seconds",
        dest="poll_seconds",
        type=float,
        help="seconds between registry scans for new, changed and removed versions "
        "(default 2; 0: never; env MLSERVE_POLL_SECONDS)",
    )
    p.add_argument(
        "--full-scan-every",
        dest="full_scan_every",
        type=int,
        help="every this many scans, read the whole registry; the scans between read only "
        "the models whose watched directory and file times changed (default 30; 1: every "
        "scan; env MLSERVE_FULL_SCAN_EVERY)",
    )
    p.add_argument(
        "--state-dir",
        dest="state_dir",
        help="routing state and audit log, apart from the registry (which may then be "
        "read-only; replicas may share it) (default: beside the registry; "
        "env MLSERVE_STATE_DIR)",
    )
    p.add_argument(
        "--audit-log",
        dest="audit_log",
        help="audit log of admin changes (default: audit.jsonl in --state-dir, else in the "
        "registry; env MLSERVE_AUDIT_LOG)",
    )
    p.add_argument(
        "--payload-dir",
        dest="payload_dir",
        help="log sampled requests ([payloads] in model.toml) here (default: off; "
        "env MLSERVE_PAYLOAD_DIR)",
    )
    p.add_argument("--payload-max-bytes", dest="payload_max_bytes", type=int)
    p.add_argument("--payload-backups", dest="payload_backups", type=int)
    p.add_argument("--payload-queue", dest="payload_queue", type=int)


_SETTING_KEYS = (
    "model_name",
    "host",
    "port",
    "grpc_port",
    "workers",
    "log_level",
    "max_body_bytes",
    "max_elements",
    "max_header_bytes",
    "drain_seconds",
    "body_timeout_seconds",
    "overload_delay_ms",
    "inference_threads",
    "monitoring",
    "fast_lane",
    "tracing",
    "poll_seconds",
    "full_scan_every",
    "state_dir",
    "audit_log",
    "payload_dir",
    "payload_max_bytes",
    "payload_backups",
    "payload_queue",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "profile":
        return _profile(args)
    if args.command == "audit":
        return _audit_verify(args.file)
    if args.command == "payloads":
        return _payloads_export(args)
    if args.command == "publish":
        return _publish(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "predict":
        return _predict(args)
    overrides = {k: getattr(args, k, None) for k in _SETTING_KEYS}
    if args.command == "demo":
        from .demo import build_demo

        level = (args.log_level or "info").upper()
        logging.basicConfig(
            level=logging.DEBUG if level == "TRACE" else level,
            format="%(levelname)s %(name)s: %(message)s",
        )
        overrides["registry"] = build_demo(Path(args.dir), force=args.rebuild)
        if args.build_only:
            print(overrides["registry"])
            return 0
    else:
        overrides["registry"] = args.registry
    try:
        settings = ServerSettings.load(overrides)
        check_tracing(settings.tracing)
    except ConfigError as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    if not Path(settings.registry).is_dir():
        print(f"mlserve: registry directory {settings.registry} does not exist", file=sys.stderr)
        return 2
    if settings.state_dir:  # routing state and the audit log: refuse to start without them
        state = Path(settings.state_dir)
        try:
            state.mkdir(parents=True, exist_ok=True)
            probe = state / f".write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            print(
                f"mlserve: --state-dir {state} is not a writable directory "
                f"({exc.strerror or exc}): routing changes and the audit log could not be kept",
                file=sys.stderr,
            )
            return 2
    from .server import serve

    return serve(settings)


def _profile(args: argparse.Namespace) -> int:
    """``mlserve profile``: read the data, build the profile, write ``reference.json``."""
    from .monitoring.profile import profile_warnings, save_profile
    from .reference_data import profile_from_file

    try:
        profile = profile_from_file(
            args.data,
            input_key=args.input_key,
            feature_names=args.feature_names,
            categorical=args.categorical,
            model=args.model,
            bins=args.bins,
            top_k=args.top_k,
            dtype=args.dtype,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        save_profile(profile, args.out / "reference.json")
    except (ValueError, OSError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    for warning in profile_warnings(profile):
        print(f"warning: {warning}", file=sys.stderr)
    outputs = ", ".join(f"{k} ({len(v)})" for k, v in profile["outputs"].items()) or "none"
    print(
        f"wrote {args.out / 'reference.json'}: {profile['n_rows']} rows, "
        f"{len(profile['features'])} features, outputs: {outputs}"
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .governance.publish import PublishError, publish
    from .monitoring.profile import load_profile, profile_warnings

    try:
        done = publish(
            args.registry,
            args.model,
            reference=args.reference,
            estimator=args.estimator,
            onnx_model=args.onnx,
            input_key=args.input_key,
            feature_names=args.feature_names,
            categorical=args.categorical,
            tolerance=args.tolerance,
            metrics=_pairs(args.metric, "metric", True),
            tags=_pairs(args.tag, "tag", False),
            parent=args.parent,
        )
    except (PublishError, ValueError, OSError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    err = (
        ""
        if done.max_error is None
        else f", max difference from the estimator {done.max_error:.2g}"
    )
    print(f"published {done.model} v{done.version} at {done.path}{err}")
    try:  # the profile publish wrote: say which features it cannot watch
        for warning in profile_warnings(load_profile(done.path / "reference.json")):
            print(f"warning: {warning}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"warning: the published reference profile could not be read: {exc}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .governance.gate import GateError, validate_version
    from .registry.layout import VALIDATION_FILE

    try:
        report = validate_version(
            args.registry,
            args.model,
            args.model_version,
            args.data,
            write=not args.dry_run,
            label=args.label,
            group=args.group,
            input_key=args.input_key,
            force=args.force,
            state_dir=args.state_dir,
        )
    except (GateError, ValueError, OSError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    if report.not_written:
        print(f"mlserve: {report.not_written}", file=sys.stderr)
    elif not args.dry_run:
        print(f"wrote {args.registry / args.model / str(args.model_version) / VALIDATION_FILE}")
    return 0 if report.passed else 1


def _payloads_export(args: argparse.Namespace) -> int:
    from .governance.payload_export import export_payloads

    try:
        summary = export_payloads(
            args.dir,
            args.model,
            version=args.model_version,
            since=args.since,
            until=args.until,
            out=args.out,
            labels=args.labels,
            label_output=args.label_output,
            input_name=args.input_name,
            registry=args.registry,
        )
    except (ValueError, OSError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['out']}: {summary['rows']} rows × {summary['features']} features from "
        f"{summary['requests']} requests (versions {summary['versions']}); "
        f"{summary['unlabeled_rows']} rows without a label dropped, "
        f"{summary['failed_skipped']} failed requests left out"
    )
    return 0


def _audit_verify(file: str) -> int:
    from .governance.audit import last_hash, verify

    try:
        count, problem = verify(Path(file))
    except OSError as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"mlserve: audit log {file}: {problem}", file=sys.stderr)
        return 1
    with Path(file).open("rb") as fh:
        last = last_hash(fh)
    # Lines cut from the end leave a chain that verifies: keep this hash elsewhere to compare.
    print(f"{file}: {count} entries, hash chain intact; last line's sha256 {last}")
    return 0


def _predict_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve predict`` (see ``mlserve.client.score_file``)."""
    p.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the server (default http://127.0.0.1:8080)"
    )
    p.add_argument("--model", required=True)
    p.add_argument(
        "--version",
        type=int,
        dest="model_version",
        help="the version to score with (default: the model's default version, pinned)",
    )
    p.add_argument(
        "--data", required=True, type=Path, metavar="FILE", help=".csv, .parquet or .npz"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help=".csv, .parquet or .npz (default: CSV on standard output)",
    )
    p.add_argument("--batch-rows", type=int, default=1000, help="rows per request (1000)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column of the file not to send (a label, an id); repeat for several",
    )


def _predict(args: argparse.Namespace) -> int:
    """``mlserve predict``: score a file through ``mlserve.client``; progress on stderr."""
    from time import perf_counter

    from .client import Client, ClientError, score_file, write_outputs

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\r {done:,}/{total:,} rows")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    start = perf_counter()
    try:
        with Client(args.url, timeout=args.timeout, batch_rows=args.batch_rows) as client:
            outputs, version = score_file(
                client,
                args.model,
                args.data,
                version=args.model_version,
                out=args.out,
                progress=progress if tty else None,
                drop=args.drop,
            )
    except ClientError as exc:
        hint = ""
        if "unknown input" in str(exc) and args.data.suffix.lower() != ".npz":
            hint = " (a column that is not a feature, a label or an id: leave it out with --drop)"
        print(f"mlserve: {args.url}: {exc}{hint}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ImportError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        try:
            write_outputs(outputs, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `mlserve predict ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    rows = next(iter(outputs.values())).shape[0] if outputs else 0
    where = f" to {args.out}" if args.out is not None else ""
    print(
        f"scored {rows:,} rows with {args.model} v{version} in "
        f"{perf_counter() - start:.1f} s{where}",
        file=sys.stderr,
    )
    return 0


def healthcheck() -> int:
    """``mlserve-healthcheck``: exit 0 when the local server answers live (the container's
    HEALTHCHECK; no curl in the image)."""
    import os
    import urllib.request

    port = os.environ.get("MLSERVE_PORT", "8080")
    if not port.isdigit():
        print(f"mlserve-healthcheck: MLSERVE_PORT {port!r} is not a port", file=sys.stderr)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/v2/health/live", timeout=3) as r:
            return 0 if r.status == 200 else 1
    except OSError:
        return 1
