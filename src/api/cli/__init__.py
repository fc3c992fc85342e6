"""The `chronicle` command.

Every command but `dev` finds its servers in CHRONICLE_DATABASE_URL / CHRONICLE_NATS_URL /
CHRONICLE_REDIS_URL, or else in the data folder of a running `chronicle dev`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from api.cli import audit, bench, projections, serve, top
from api.cli.common import CliError
from infra.devstack.embedded import EmbeddedServerError
from infra.observe import logs
from infra.settings import SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(
        os.environ.get("CHRONICLE_LOG_LEVEL", "INFO"), os.environ.get("CHRONICLE_LOG_FORMAT", "console").lower()
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        args.run(args)
    except (CliError, SettingsError, EmbeddedServerError) as e:
        print(f"chronicle: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chronicle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="the data folder (default ./.chronicle or CHRONICLE_DATA_DIR)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        dest="data_dir_sub",
        metavar="DATA_DIR",
        help="the data folder (default ./.chronicle or CHRONICLE_DATA_DIR)",
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def add(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, parents=[common], **kwargs)
        return parser

    for module in (serve, projections, audit, bench, top):
        module.register(sub, add)
    return parser
