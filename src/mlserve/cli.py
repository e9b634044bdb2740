"""``mlserve`` command line: a thin layer that builds settings and calls the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import ServerSettings
from .errors import ConfigError

DEFAULT_DEMO_DIR = "mlserve-demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlserve", description="ONNX model server speaking the Open Inference Protocol."
    )
    parser.add_argument("--version", action="version", version=f"mlserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a model registry directory")
    serve.add_argument("--registry", help="registry directory (env MLSERVE_REGISTRY)")
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
    audit = sub.add_parser("audit", help="check the admin audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="verify the hash chain of an audit log")
    verify.add_argument("file", help="the audit log (audit.jsonl in the registry by default)")
    return parser


def _profile_options(p: argparse.ArgumentParser) -> None:
    """Options of ``mlserve profile`` (see ``mlserve.profiling.profile_from_file``)."""
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
    p.add_argument("--bins", type=int, default=10, help="bins per numeric feature (10)")
    p.add_argument(
        "--top-k",
        type=int,
        default=20,
        metavar="K",
        help="levels kept per categorical feature (20)",
    )


def _names(text: str) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]``."""
    return [n.strip() for n in text.split(",") if n.strip()]


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default 127.0.0.1; env MLSERVE_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080; env MLSERVE_PORT)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument(
        "--log-level",
        dest="log_level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    p.add_argument("--max-elements", dest="max_elements", type=int)
    p.add_argument("--drain-seconds", dest="drain_seconds", type=float)
    p.add_argument("--inference-threads", dest="inference_threads", type=int)
    p.add_argument(
        "--monitoring",
        choices=["on", "off"],
        help="per-request metrics and drift (default on; env MLSERVE_MONITORING)",
    )
    p.add_argument(
        "--poll-seconds",
        dest="poll_seconds",
        type=float,
        help="seconds between registry scans for new, changed and removed versions "
        "(default 2; 0: never; env MLSERVE_POLL_SECONDS)",
    )
    p.add_argument(
        "--audit-log",
        dest="audit_log",
        help="audit log of admin changes (default: audit.jsonl in the registry; "
        "env MLSERVE_AUDIT_LOG)",
    )


_SETTING_KEYS = (
    "host",
    "port",
    "workers",
    "log_level",
    "max_body_bytes",
    "max_elements",
    "drain_seconds",
    "inference_threads",
    "monitoring",
    "poll_seconds",
    "audit_log",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "profile":
        return _profile(args)
    if args.command == "audit":
        return _audit_verify(args.file)
    overrides = {k: getattr(args, k) for k in _SETTING_KEYS}
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
    except ConfigError as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    if not Path(settings.registry).is_dir():
        print(f"mlserve: registry directory {settings.registry} does not exist", file=sys.stderr)
        return 2
    from .server import serve

    return serve(settings)


def _profile(args: argparse.Namespace) -> int:
    """``mlserve profile``: read the data, build the profile, write ``reference.json``."""
    from .monitoring.profile import save_profile
    from .profiling import profile_from_file

    try:
        profile = profile_from_file(
            args.data,
            input_key=args.input_key,
            feature_names=args.feature_names,
            categorical=args.categorical,
            model=args.model,
            bins=args.bins,
            top_k=args.top_k,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        save_profile(profile, args.out / "reference.json")
    except (ValueError, OSError) as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    outputs = ", ".join(f"{k} ({len(v)})" for k, v in profile["outputs"].items()) or "none"
    print(
        f"wrote {args.out / 'reference.json'}: {profile['n_rows']} rows, "
        f"{len(profile['features'])} features, outputs: {outputs}"
    )
    return 0


def _audit_verify(file: str) -> int:
    from .governance.audit import verify

    try:
        count, problem = verify(Path(file))
    except OSError as exc:
        print(f"mlserve: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"mlserve: audit log {file}: {problem}", file=sys.stderr)
        return 1
    print(f"{file}: {count} entries, hash chain intact")
    return 0
