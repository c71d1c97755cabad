"""``tensorgate token new --role infer``: a fresh random token, and the line for the token file."""

from __future__ import annotations

import argparse

from tensorgate.server.auth import ROLES, hash_token, new_token

HELP = "make a bearer token: prints it once, and the line to add to the --auth-tokens file"


def handle(args: argparse.Namespace) -> int:
    roles = sorted({r for value in args.role for r in value.split(",") if r})
    token = new_token()
    print(f"token: {token}")
    print("add this line to the --auth-tokens file (the server keeps only the hash):")
    print(f"{hash_token(token)} {','.join(roles)}")
    return 0


def parse_role(value: str) -> str:
    unknown = sorted({r for r in value.split(",") if r} - ROLES)
    if unknown or not value.strip(","):
        raise argparse.ArgumentTypeError(f"roles are {sorted(ROLES)}, got {value!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("token", help=HELP, description=HELP)
    actions = parser.add_subparsers(dest="token_action", required=True, parser_class=type(parser))
    new = actions.add_parser("new", help="a fresh random token with the given roles")
    new.add_argument(
        "--role",
        action="append",
        type=parse_role,
        required=True,
        help="infer or admin; repeat or separate with commas",
    )
    new.set_defaults(func=handle)
