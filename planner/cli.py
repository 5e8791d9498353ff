"""The ``planner`` command line: a thin wrapper over the library's verbs.

Every :class:`~planner.errors.PlannerError` is printed as its message (one ``FILE: field: problem`` line
per error) with a non-zero exit code and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from planner.errors import PlannerError

__all__ = ["main"]


def _cmd_validate(args: argparse.Namespace) -> int:
    from planner.ir import load

    failed = 0
    for path in args.files:
        try:
            graph = load(path)
        except PlannerError as err:
            print(err, file=sys.stderr)
            failed = max(failed, err.exit_code)
            continue
        print(f"{path}: ok ({graph.name}, {graph.param_count:,} parameters)")
    return failed


def _cmd_show(args: argparse.Namespace) -> int:
    from planner.ir import load
    from planner.show import describe_graph, format_graph

    desc = describe_graph(load(args.file), seconds=args.seconds)
    print(json.dumps(desc, indent=2) if args.json else format_graph(desc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="planner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check architecture files; exit 2 on the first invalid one")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("show", help="print the resolved graph: node, kind, widths, frames, bits, N:M")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seconds", type=float, default=1.0, help="audio length for the frames column (default 1)")
    p.set_defaults(func=_cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``planner`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PlannerError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
