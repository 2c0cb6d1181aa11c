"""Call a deployed kit API with SigV4 (botocore's signer; no other dependency).

    python scripts/call_api.py --url https://ID.execute-api.us-east-1.amazonaws.com/v1/ templates
    python scripts/call_api.py --url URL prompt "Explain RAG in one sentence" --temperature 0.2
    python scripts/call_api.py --url URL template summarize audience=architects text=@notes.txt

The URL is the stack's ApiUrl output. Credentials come from the usual AWS chain (profile, env, SSO); the
caller needs execute-api:Invoke on the API. A value of the form @file is read from that file. The signing
and the error contract live in kit/sigv4.py; `kit l1 …` does the same calls without copying the URL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import botocore.session
from botocore.exceptions import BotoCoreError, ProfileNotFound

from kit.sigv4 import ApiError, ApiUnreachable, call, region_of, signed_request

__all__ = ["build_call", "main", "parse_args", "region_of", "signed_request"]


def _value(raw: str) -> str:
    return Path(raw[1:]).read_text() if raw.startswith("@") else raw


def build_call(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    base = args.url.rstrip("/")
    if args.command == "templates":
        return "GET", f"{base}/templates", None
    if args.command == "prompt":
        body: dict[str, Any] = {"prompt": _value(args.text)}
        for key in ("system", "temperature", "topP", "maxTokens"):
            if getattr(args, key) is not None:
                body[key] = _value(getattr(args, key)) if key == "system" else getattr(args, key)
        return "POST", f"{base}/prompt", body
    variables = {}
    for pair in args.variables:
        if "=" not in pair:
            raise ValueError(f"variable {pair!r}: write it as key=value (key=@file reads the value from a file)")
        key, value = pair.split("=", 1)
        variables[key] = _value(value)
    return "POST", f"{base}/templates/{quote(args.name, safe='')}", {"variables": variables}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the stack's ApiUrl output")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("templates", help="list the managed prompt templates")
    prompt = commands.add_parser("prompt", help="send a free-form prompt")
    prompt.add_argument("text")
    prompt.add_argument("--system")
    prompt.add_argument("--temperature", type=float)
    prompt.add_argument("--topP", type=float)
    prompt.add_argument("--maxTokens", type=int)
    template = commands.add_parser("template", help="run a managed template")
    template.add_argument("name")
    template.add_argument("variables", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Exit 0 with the answer, 1 when the call fails, 2 for a usage or credentials problem; never a traceback."""
    args = parse_args(argv)
    try:
        method, url, body = build_call(args)
    except (ValueError, OSError) as err:  # a variable without "=", an @file that cannot be read
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        region_of(url)
    except ValueError as err:
        print(f"--url: {err}", file=sys.stderr)
        return 2
    try:
        credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            print("no AWS credentials found: configure a profile or environment variables", file=sys.stderr)
            return 2
        # Credentials that refresh (SSO, assumed roles) are fetched when the request is signed.
        print(json.dumps(call(method, url, body, credentials), indent=2))
        return 0
    except ProfileNotFound as err:  # AWS_PROFILE (or AWS_DEFAULT_PROFILE) names no profile of the AWS config
        print(
            f"AWS profile {err.kwargs.get('profile')!r} is not in your AWS config: list the profiles with "
            "aws configure list-profiles, then set AWS_PROFILE to one of them",
            file=sys.stderr,
        )
        return 2
    except BotoCoreError as err:
        print(f"AWS credentials: {err}", file=sys.stderr)
        return 2
    except (ApiError, ApiUnreachable, OSError) as err:
        print(err, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
