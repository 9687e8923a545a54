"""Command line of celestial-serve: serve a project's trained model over HTTP."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celestial_data.command import run_command
from celestial_serve.errors import OptionsError, ServeError

__all__ = ["build_parser", "main"]

PROG = "celestial-serve"


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, received {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port LitServe accepts (1024-65535)."""
    value = int(text)
    if not 1024 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1024 to 65535, received {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, received {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, received {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, received {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-serve``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the trained model of a celestial project over HTTP: "
        "POST /predict, GET /health, GET /info, GET /metrics, and a web page at /.",
    )
    add = parser.add_argument
    add("project_dir", metavar="PROJECT_DIR", help="project folder (with model/)")
    add(
        "--host",
        default="127.0.0.1",
        choices=["127.0.0.1", "0.0.0.0", "::"],
        help="interface to listen on (default: 127.0.0.1, this machine only)",
    )
    add("--port", type=port_number, default=8000, help="default: 8000")
    add("--workers", type=positive_int, default=1, help="inference processes (default: 1)")
    add(
        "--api-servers",
        type=positive_int,
        help="HTTP processes reading, checking and decoding uploads (default: one per worker)",
    )
    add(
        "--max-batch-size",
        type=positive_int,
        default=16,
        help="most requests predicted together; 1 turns batching off (default: 16)",
    )
    add(
        "--batch-timeout",
        type=non_negative_float,
        default=0.0,
        help="seconds a worker waits, once a request has come, for more to batch with it; "
        "0 batches only the requests already waiting (default: 0)",
    )
    add(
        "--max-upload-mb",
        type=positive_float,
        default=10.0,
        help="largest request body accepted, in MiB; larger ones get 413 (default: 10)",
    )
    add(
        "--max-megapixels",
        type=positive_float,
        default=16.0,
        help="most pixels, in millions, an upload may decode to (its full size, whatever its "
        "format); more get 413 (default: 16)",
    )
    add(
        "--max-decodes",
        type=positive_int,
        default=1,
        help="images over 512 x 512 pixels each HTTP process decodes at once; more wait "
        "(default: 1)",
    )
    add(
        "--max-connections",
        type=positive_int,
        default=32,
        help="open connections each HTTP process serves; beyond them, requests get 503 "
        "(default: 32)",
    )
    add(
        "--header-timeout",
        type=positive_float,
        default=10.0,
        help="seconds a connection has to send a request's headers, from when it opens or "
        "was last answered; then it is closed (default: 10)",
    )
    add(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a request's body has to arrive once its headers have; then 408 (default: 30)",
    )
    add(
        "--keep-alive-timeout",
        type=positive_float,
        default=5.0,
        help="seconds an idle connection is kept open for the next request (default: 5)",
    )
    add(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="server log level; info logs every request (default: info)",
    )
    add(
        "--transport",
        default="lean",
        choices=["lean", "stock"],
        help="how requests reach the workers: lean (Unix sockets, through LitServe "
        "internals) or stock (LitServe's own queues and route) (default: lean)",
    )
    add(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="do not count requests and answers, and serve no GET /metrics",
    )
    add(
        "--log-dir",
        metavar="DIR",
        help="record every answer to DIR/predictions-*.jsonl and keep uncertain uploads in "
        "DIR/review/ (default: no log)",
    )
    add(
        "--log-max-mib",
        type=positive_float,
        help="start a new log file once the current one reaches this many MiB (default: 64)",
    )
    add(
        "--review-below",
        type=probability,
        help="keep uploads whose closest class's probability is below this in DIR/review/, "
        "as well as those answered unknown (default: 0.5)",
    )
    add(
        "--review-max-mib",
        type=non_negative_float,
        help="most MiB DIR/review/ holds; past it the oldest images go; 0 keeps none "
        "(default: 256)",
    )
    parser.set_defaults(run=_serve)
    return parser


#: The prediction log's options, which apply with --log-dir only.
LOG_FLAGS = ("log_max_mib", "review_below", "review_max_mib")


def _serve(args: argparse.Namespace) -> int:
    # Imported here so that --help stays fast.
    from celestial_serve.project import load_card
    from celestial_serve.server import LogOptions, ServerOptions, serve

    given = [name for name in LOG_FLAGS if getattr(args, name) is not None]
    log = None
    if args.log_dir is not None:  # LogOptions holds the defaults of the flags not given
        fields: dict[str, Any] = {}
        if args.log_max_mib is not None:
            fields["max_bytes"] = int(args.log_max_mib * 2**20)
        if args.review_below is not None:
            fields["review_below"] = args.review_below
        if args.review_max_mib is not None:
            fields["review_max_bytes"] = int(args.review_max_mib * 2**20)
        log = LogOptions(folder=Path(args.log_dir), **fields)
    elif given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise OptionsError(
            f"{flags} only {verb} to the prediction log: add --log-dir DIR to keep one, or "
            f"leave {them} out."
        )

    options = ServerOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        api_servers=args.api_servers,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6),
        max_decodes=args.max_decodes,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        log_level=args.log_level,
        transport=args.transport,
        log=log,
        metrics=args.metrics,
    )
    serve(load_card(args.project_dir), options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    return run_command(build_parser(), argv, (ServeError,))
