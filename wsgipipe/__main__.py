"""``wsgipipe serve DIR``: serve a folder under gunicorn with wsgipipe's stack.

Like ``python -m http.server``, but with the production defaults of
``gunicorn.conf.py``: gthread workers, an idle timeout, clean 404s and one
transfer line per response. Also runs as ``python -m wsgipipe``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import ConfigurationError
from ._pace import DEFAULT_GRACE, DEFAULT_MIN_RATE
from ._stack import DEFAULT_IDLE_TIMEOUT, folder_app

__all__ = ["main", "parser", "settings_from"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="wsgipipe", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a folder")
    serve.add_argument("directory", help="the folder to serve")
    serve.add_argument(
        "--bind",
        "-b",
        default=os.environ.get("GUNICORN_BIND", "127.0.0.1:8000"),
        help="address to listen on (default: $GUNICORN_BIND or 127.0.0.1:8000)",
    )
    serve.add_argument("--workers", "-w", type=_positive_int, default=2, help="processes (2)")
    serve.add_argument("--threads", type=_positive_int, default=8, help="threads per worker (8)")
    serve.add_argument(
        "--worker-class",
        default="offload",
        choices=sorted(WORKER_CLASSES),
        help="gunicorn worker class (offload: gthread with file downloads offloaded; "
        "see docs/deployment.md before choosing sync)",
    )
    serve.add_argument("--timeout", type=_positive_int, default=30, help="worker timeout (30 s)")
    serve.add_argument(
        "--tee",
        action="append",
        default=[],
        metavar="SINKS",
        help="extra sinks, comma-separated: stdout, sha256 (any hash name), dir:PATH",
    )
    serve.add_argument("--limit-rate", metavar="RATE", help="bytes per second per response (1k)")
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"cut off a client that reads nothing this long ({DEFAULT_IDLE_TIMEOUT:g}; 0 = off)",
    )
    serve.add_argument(
        "--min-rate",
        default=f"{DEFAULT_MIN_RATE:g}",
        metavar="RATE",
        help=f"cut off a client slower than RATE bytes/s after {DEFAULT_GRACE:g} s "
        f"({DEFAULT_MIN_RATE:g}; 1k; 0 = off)",
    )
    serve.add_argument(
        "--metrics", action="store_true", help="Prometheus metrics at /-/metrics (off)"
    )
    serve.add_argument(
        "--live",
        action="store_true",
        help="live transfers page at /-/transfers, loopback clients only (off)",
    )
    serve.add_argument(
        "--live-token",
        default=os.environ.get("WSGIPIPE_LIVE_TOKEN"),
        metavar="TOKEN",
        help="let any client with this token see the live page ($WSGIPIPE_LIVE_TOKEN)",
    )
    return top


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


#: ``--worker-class`` choices and what gunicorn loads for each.
WORKER_CLASSES = {
    "offload": "wsgipipe.gunicorn.OffloadWorker",
    "gthread": "gthread",
    "sync": "sync",
}


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """The gunicorn settings for parsed ``serve`` arguments."""
    return {
        "bind": args.bind,
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": WORKER_CLASSES[args.worker_class],
        "timeout": args.timeout,
    }


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    run = _gunicorn_runner(top)
    try:
        app = folder_app(
            args.directory,
            tee=",".join(args.tee),
            idle_timeout=args.idle_timeout or None,
            limit_rate=args.limit_rate,
            min_rate=args.min_rate,
            **_observability(args),
        )
    except ConfigurationError as exc:
        top.error(str(exc))
    run(app, **settings_from(args), **_metrics_hooks(args))
    return 0


def _observability(args: argparse.Namespace) -> dict[str, Any]:
    if args.metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its figures here, so that any of them can
        # answer a scrape for all; a fresh directory per run (docs/operations.md).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsgipipe-metrics-")
    live = bool(args.live or args.live_token)
    return {"metrics": args.metrics, "live": live, "live_token": args.live_token or None}


def _metrics_hooks(args: argparse.Namespace) -> dict[str, Any]:
    if not args.metrics:
        return {}

    def child_exit(server: object, worker: Any) -> None:
        from .prometheus import mark_process_dead

        mark_process_dead(worker.pid)

    return {"child_exit": child_exit}


def _gunicorn_runner(top: argparse.ArgumentParser) -> Callable[..., None]:
    """wsgipipe.gunicorn.run, or a one-line way out when gunicorn is not installed.

    gunicorn is an optional extra, imported only when serving: a plain
    ``pip install wsgipipe`` has no server to run.
    """
    try:
        from .gunicorn import run
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "gunicorn":
            raise
        top.exit(2, _NO_GUNICORN)
    return run


_NO_GUNICORN = (
    "wsgipipe serve runs gunicorn, which is not installed here.\n"
    "Install it with:  pip install 'wsgipipe[gunicorn]'\n"
)


if __name__ == "__main__":
    sys.exit(main())
