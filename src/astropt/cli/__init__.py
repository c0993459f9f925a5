"""``astropt <command>``: a thin layer that parses arguments and calls library functions.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its sub-commands; every sub-command sets ``func`` to a callable taking the parsed
arguments. Errors meant for a person (bad config, bad data, bad files) become one line on
stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = [
    "astropt.cli.model",
    "astropt.cli.data",
    "astropt.cli.train",
    "astropt.cli.tasks",
    "astropt.cli.explore",
    "astropt.cli.convert",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astropt",
        description="AstroPT: large observation models for astronomy.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are a person's input problem (or a full disk), reported as one line."""
    from astropt.atomic import DiskFullError

    return (ValueError, FileNotFoundError, FileExistsError, KeyError, PermissionError, IsADirectoryError,
            DiskFullError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        result = args.func(args)
    except _user_errors() as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"astropt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
