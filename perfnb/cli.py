"""The ``perfnb`` command: one entry point, a subcommand per job.

Each subcommand lives beside the code it drives as a ``main_xxx(argv) -> int``
function; this module only dispatches, so ``perfnb --help`` stays fast and
imports nothing heavy.

>>> main(["--help"])  # doctest: +ELLIPSIS
usage: perfnb <command> [options]
...
0
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["COMMANDS", "main"]

#: command -> (module, function, one-line help)
COMMANDS: Final[dict[str, tuple[str, str, str]]] = {
    "demo": (
        "perfnb.demo.run",
        "main_demo",
        "run the demo app, record it into the store and print a per-route summary",
    ),
    "demo-app": ("perfnb.demo.app", "main_demo_app", "serve the demo app on 127.0.0.1"),
    "record": (
        "perfnb.feedclient",
        "main_record",
        "follow an app's perfnb feed and write its records to a store",
    ),
    "lab": (
        "perfnb.widgets.lab",
        "main_lab",
        "start the demo app and JupyterLab with perfnb's notebooks",
    ),
    "load": ("perfnb.load.command", "main_load", "run a load test against a local target"),
    "impact": (
        "perfnb.load.impact",
        "main_impact",
        "measure what monitoring costs an app: the same load with monitoring off and on",
    ),
    "retention": (
        "perfnb.store.retention",
        "main_retention",
        "apply the store's retention policy (or show it with --dry-run)",
    ),
    "export": (
        "perfnb.store.export",
        "main_export",
        "export records from a store to CSV, JSON, JSON lines or Parquet",
    ),
    "health": (
        "perfnb.healthcmd",
        "main_health",
        "replay a store's detail through the health engine (--write keeps what it finds)",
    ),
    "report": (
        "perfnb.report",
        "main_report",
        "the post-mortem of a time range as one static HTML file",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: perfnb <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {COMMANDS[name][2]}" for name in sorted(COMMANDS)]
    lines += ["", "`perfnb <command> --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``perfnb`` with ``argv`` (default: the process arguments); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"perfnb: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    try:
        return func(rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
