"""The `catsdogs` command: `catsdogs run [--SETTING VALUE ...] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from catsdogs.data import ArchiveError
from catsdogs.download import DownloadError
from catsdogs.settings import Settings, SettingsError, load_settings

USAGE_ERROR = 2


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=field.description)
        else:
            default = field.default if field.default is not None else "none"
            parser.add_argument(flag, dest=name, metavar=name.upper(), default=None,
                                help=f"{field.description} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="catsdogs", description="Cat or dog? Train and evaluate the convnet.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the training flow locally",
        description="Run the training flow. Settings come from these flags, CATSDOGS_* environment "
                    "variables and a TOML file, in that order of precedence.")
    run.add_argument("--config", metavar="FILE", help="TOML file of settings (also CATSDOGS_CONFIG)")
    run.add_argument("--json", action="store_true", help="end with one JSON object of the results on stdout")
    _add_setting_flags(run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {name: getattr(args, name) for name in Settings.model_fields}
    try:
        settings = load_settings(overrides, args.config)
    except SettingsError as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return USAGE_ERROR
    from flows.train import train_flow  # imports Prefect and starts nothing until called

    try:
        metrics = train_flow(settings)
    except (DownloadError, ArchiveError, SettingsError) as err:
        print(f"catsdogs: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(metrics.model_dump(mode="json")))
    else:
        print(f"{metrics.variant}: test accuracy {metrics.test_accuracy:.4f}, test loss {metrics.test_loss:.4f}, "
              f"best epoch {metrics.best_epoch} of {metrics.epochs}; model {metrics.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
