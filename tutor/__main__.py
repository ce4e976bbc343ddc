"""The course's command line.

    python -m tutor                 # course map + environment check (same as `map`)
    python -m tutor grade exercises/   # grade your exercise notebooks (tutor.grading)
    python -m tutor bench ...       # time the implementations (tutor.bench)
    python -m tutor progress [--notebook NN] [--reset]   # show or reset your exercise progress

Exit codes: 0 all good; 1 the environment check found something missing (map), or what
``grade`` / ``bench`` returned; 2 usage error or a subcommand whose module is not installed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: subcommands that hand their arguments, untouched, to ``<module>.main(argv) -> int``
FORWARDED = {"grade": ("tutor.grading", "grade exercise notebooks; arguments go to the grader"),
             "bench": ("tutor.bench", "benchmark the attention implementations; arguments go to tutor.bench"),
             "progress": ("tutor.exercises.progress", "show or reset your exercise progress")}


def build_parser() -> argparse.ArgumentParser:
    """The parser, for ``--help`` and the ``map`` subcommand (grade/bench arguments are forwarded)."""
    ap = argparse.ArgumentParser(prog="python -m tutor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    from tutor import __version__
    ap.add_argument("--version", action="version", version=f"tutor {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="{map,grade,bench,progress}")
    sub.add_parser("map", help="print the course map and check the environment (the default)")
    for name, (module, text) in FORWARDED.items():
        sub.add_parser(name, help=f"{text} (see `python -m tutor {name} --help`)", add_help=False)
    return ap


def forward(command: str, argv: List[str]) -> int:
    """Run ``<module>.main(argv)`` for a forwarded subcommand; 2 when that module is not there."""
    module_name = FORWARDED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (missing == module_name or module_name.startswith(missing + ".")):
            raise   # the module exists but one of *its* imports failed: show the real error
        print(f"python -m tutor {command}: {module_name} is not available in this installation "
              f"({exc}). Update your checkout and run `bash setup.sh`.", file=sys.stderr)
        return 2
    main = getattr(module, "main", None)
    if not callable(main):
        print(f"python -m tutor {command}: {module_name} has no main(argv) function.", file=sys.stderr)
        return 2
    rc = main(argv)
    return int(rc or 0)


def show_map() -> int:
    """Print the course map and the environment check; 1 when a check says MISSING."""
    from tutor.course import course_map, course_root, format_map
    from tutor.envcheck import format_checks, run_checks

    root = course_root()
    print(f"Sparse attention course (root: {root})\n")
    print("\n".join(format_map(course_map(root))))
    checks = run_checks()
    print("\nEnvironment check:")
    print("\n".join(format_checks(checks)))
    missing = [c.name for c in checks if not c.ok]
    if missing:
        print(f"\nMissing: {', '.join(missing)}. Fix the lines marked MISSING, then run `python -m tutor` again.")
        return 1
    print("\nAll set. Open the course with `jupyter lab` (or `bash setup.sh --open`) and start with notebook 00.")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m tutor``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return forward(argv[0], argv[1:])
    opts = build_parser().parse_args(argv)
    if opts.command in (None, "map"):
        return show_map()
    return 2  # unreachable: argparse rejects unknown subcommands


if __name__ == "__main__":
    sys.exit(main())
