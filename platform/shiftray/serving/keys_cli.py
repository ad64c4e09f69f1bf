"""`shiftray keys add|list|revoke KEYS_FILE`: manage the serving endpoint's API keys file
(`shiftray.serving.keys`). A new key is printed once, alone on stdout, and never stored."""

from __future__ import annotations

import argparse
import sys

from shiftray.errors import UserInputError
from shiftray.serving.keys import ALL_MODELS, KeysFile, new_key, read_keys, write_keys


def cmd_add(args: argparse.Namespace) -> int:
    keys = read_keys(args.keys_file, missing_ok=True)
    if any(k.name == args.name for k in keys.keys):
        raise UserInputError(f"{args.keys_file} already has a key named {args.name!r} "
                             "(revoke it first, or choose another name)")  # fmt: skip
    models = ALL_MODELS if args.all_models else [m.strip() for m in args.models.split(",")]
    if models != ALL_MODELS and not all(models):
        raise UserInputError(f"--models {args.models!r}: give comma-separated model names")
    key, entry = new_key(args.name, models)
    write_keys(args.keys_file, KeysFile(keys=[*keys.keys, entry]))
    shown = "all models" if models == ALL_MODELS else ", ".join(models)
    print(f"added key {entry.name!r} (id {entry.id}) for {shown} to {args.keys_file}; "
          "the key (stdout) is shown only this once: store it now", file=sys.stderr)  # fmt: skip
    print(key, flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from shiftray.display import print_table

    keys = read_keys(args.keys_file)
    rows = [{"name": k.name, "id": k.id, "created": k.created or "-",
             "models": k.models if k.models == ALL_MODELS else ", ".join(k.models)}
            for k in keys.keys]  # fmt: skip
    print_table(rows, ["name", "id", "models", "created"])
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    keys = read_keys(args.keys_file)
    kept = [k for k in keys.keys if k.name != args.name]
    if len(kept) == len(keys.keys):
        names = ", ".join(k.name for k in keys.keys) or "none"
        raise UserInputError(f"{args.keys_file} has no key named {args.name!r} (keys: {names})")
    write_keys(args.keys_file, KeysFile(keys=kept))
    print(f"revoked key {args.name!r} in {args.keys_file}; running servers refuse it once they "
          "reload the file (redeploy)", file=sys.stderr)  # fmt: skip
    return 0


def add_parsers(sub) -> None:
    """``keys add|list|revoke`` on the `shiftray` parser."""
    k = sub.add_parser("keys", help="API keys of the serving endpoint (auth.keys_file)")
    ks = k.add_subparsers(dest="keys_command", required=True)
    a = ks.add_parser("add", help="make a key; prints it once, stores only its salted hash")
    a.add_argument("keys_file", metavar="KEYS_FILE", help="created (mode 0600) if missing")
    a.add_argument("--name", required=True, help="who holds the key (unique in the file)")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", help="comma-separated model names the key may call")
    which.add_argument("--all-models", action="store_true", help="the key may call every model")
    a.set_defaults(func=cmd_add)
    ls = ks.add_parser("list", help="names, ids and models of the keys (never secrets)")
    ls.add_argument("keys_file", metavar="KEYS_FILE")
    ls.set_defaults(func=cmd_list)
    r = ks.add_parser("revoke", help="remove a key by name")
    r.add_argument("keys_file", metavar="KEYS_FILE")
    r.add_argument("--name", required=True)
    r.set_defaults(func=cmd_revoke)
