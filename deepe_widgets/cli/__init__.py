"""The `deepe` command line. Exit codes: 0 success, 1 a job that failed, 2 bad input.

One module per noun registers its verbs (`add_arguments(sub, verb)`); `output` prints JSON, tables
and `--wait`'s progress for all of them.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import DeepeError
from . import app, datasets, jobs, live, methods, models, worker, workspace

# 128 + SIGPIPE: what a shell reports for a reader that quit early (`deepe jobs logs 1 | head`)
BROKEN_PIPE_EXIT = 141


class _Parser(argparse.ArgumentParser):
    """argparse, with the CLI's contract for bad input: one `error: …` line on stderr, exit 2.

    `add_later(parser)`, where set, adds a verb's arguments only when that verb is parsed: for
    arguments whose module is slow to import (the worker's), which every other verb would pay for.
    """

    add_later = None

    def parse_known_args(self, args=None, namespace=None):
        if self.add_later is not None:
            add, self.add_later = self.add_later, None
            add(self)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `deepe` parser: every noun's verbs, each with its `func`."""
    parser = _Parser(prog="deepe", description="deepe-widgets: fine-tune LLMs from Jupyter.")
    sub = parser.add_subparsers(dest="command", required=True)

    def verb(parent, name, func, help_text, json_flag=False):
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    for noun in (workspace, methods, models, datasets, jobs, app, worker, live):
        noun.add_arguments(sub, verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`deepe ARGV`: its exit code."""
    from .. import config

    config.skip_slow_optional_imports()
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "compare" and len(args.ids) < 2:
        parser.exit(2, "error: compare needs two or more job ids\n")
    try:
        config.check_environment()
        code = args.func(args)
        sys.stdout.flush()  # here, so a reader that quit early is caught below, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except DeepeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (queued and running jobs go on; see: deepe jobs list)", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """The recipe of Python's signal docs: stdout's reader is gone, so what is still buffered goes to
    devnull (else Python reports the broken pipe again on exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (a test's capture)
        pass
