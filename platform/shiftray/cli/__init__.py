"""The `shiftray` command line, one module per command group: train (run, tune, compare),
info (validate, ls, reference, report, fewshot), data, serve; the cluster commands (k8s,
submit, status, logs, stop) are shiftray.cluster.commands and the keys commands
shiftray.serving.keys_cli. Each module's `add_parsers(sub)` declares its commands."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from shiftray.errors import UserInputError


def _version() -> str:
    """The installed package's version, with Ray's and torch's (what a bug report needs)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"{of('shiftray')} (ray {of('ray')}, torch {of('torch')})"


def build_parser() -> argparse.ArgumentParser:
    from shiftray.cli import data, info, serve, train
    from shiftray.cluster.commands import add_parsers as add_cluster_parsers
    from shiftray.serving.keys_cli import add_parsers as add_keys_parsers

    p = argparse.ArgumentParser(
        prog="shiftray", description="Domain adaptation and transfer learning on Ray"
    )
    p.add_argument("-C", dest="chdir", metavar="DIR",
                   help="run as if started in DIR: relative paths in specs resolve there")  # fmt: skip
    p.add_argument("--version", action="version", version=f"shiftray {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (train.add_parsers, info.add_parsers, serve.add_parsers, data.add_parsers,
                add_cluster_parsers, add_keys_parsers):  # fmt: skip
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: --overlay gpu a.b=1
    if extra and (not isinstance(getattr(args, "items", None), list)
                  or any(a.startswith("-") or "=" not in a for a in extra)):  # fmt: skip
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.items += extra
    try:
        if args.chdir:
            os.chdir(args.chdir)
        return args.func(args)
    except BrokenPipeError:  # `shiftray ls | head`: the reader has left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserInputError, FileNotFoundError, ValidationError) as e:  # the user's input: one
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # line; a bug keeps
        print(f"error: {msg}", file=sys.stderr)  # its traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
