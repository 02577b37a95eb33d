"""`granite-tuner serve`: tuned runs behind the watsonx.ai REST API and an OpenAI API.

Unlike the other commands it does not run in the CLI's own event loop: uvicorn runs its own,
and handles SIGINT/SIGTERM itself (in-flight requests finish, then the models are closed).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from granite_tuner.cli._context import Context
    from granite_tuner.cli._options import SubParsers

__all__ = ["KEYS_ENV", "register", "run_serve"]

#: Comma-separated API keys the server accepts (kept out of the command line, where `ps` shows it).
KEYS_ENV = "GRANITE_TUNER_SERVE_API_KEYS"

EXAMPLES = """examples:
  GRANITE_TUNER_SERVE_API_KEYS=$(openssl rand -hex 24) \\
    granite-tuner serve reviews --ssl-certfile cert.pem --ssl-keyfile key.pem
  granite-tuner serve reviews=reviews_pt other-run-id --insecure-no-auth --port 8080

IBM's SDK (ModelInference(deployment_id=...)), langchain-ibm and the openai client then point
at the printed URL; see docs/serving.md."""


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=common,
        help="serve tuned runs over the watsonx.ai REST API and an OpenAI-compatible API",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="*", metavar="RUN[=SERVING_NAME]", help="completed local runs, by id or name"
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the base model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--api-key-file", type=Path, help=f"file with one API key per line (else ${KEYS_ENV})"
    )
    parser.add_argument(
        "--insecure-no-auth", action="store_true", help="no API keys (loopback addresses only)"
    )
    parser.add_argument("--ssl-certfile", type=Path, help="TLS certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=Path, help="TLS private key (PEM)")
    parser.add_argument("--key-rate-limit", type=float, help="requests per second per API key")
    parser.add_argument("--max-concurrency", type=int, default=64, help="in flight per API key")
    parser.add_argument(
        "--max-new-tokens", type=int, default=1024, help="most new tokens a request may ask for"
    )
    parser.set_defaults(handler=None, sync_handler=run_serve, local_only=True)


def _api_keys(args: argparse.Namespace) -> tuple[SecretStr, ...]:
    if args.api_key_file is not None:
        try:
            text = Path(args.api_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"Cannot read --api-key-file: {exc.strerror}.") from None
        keys = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        keys = [key.strip() for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()]
    return tuple(SecretStr(key) for key in keys)


def run_serve(ctx: Context, args: argparse.Namespace) -> int:
    from granite_tuner.server import ServeConfig, serve

    config = ServeConfig(
        model=args.model,
        home=getattr(args, "home", None),
        runs=tuple(args.runs),
        host=args.host,
        port=args.port,
        api_keys=_api_keys(args),
        insecure_no_auth=args.insecure_no_auth,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        rate_limit=args.key_rate_limit,
        max_concurrency_per_key=args.max_concurrency,
        max_new_tokens=args.max_new_tokens,
    )
    url = f"{config.scheme}://{config.host}:{config.port}"
    ctx.ui.info(
        f"granite-tuner serve: {len(config.runs)} tuned run(s) on {config.model} at {url} "
        f"(watsonx.ai: {url}/ml/v1/..., OpenAI: {url}/v1, health: {url}/health)"
    )
    serve(config)
    return 0
