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
    return parser


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


_SETTING_KEYS = (
    "host",
    "port",
    "workers",
    "log_level",
    "max_body_bytes",
    "max_elements",
    "drain_seconds",
    "inference_threads",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in _SETTING_KEYS}
    if args.command == "demo":
        from .demo import build_demo

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
