"""Bad input on the command line: one top-level error type, turned into one line and exit status 2.

Every ``hybridtheory`` sub-command parses with :class:`OneLineParser` (argparse that raises instead of
printing the usage) and runs under :func:`one_line_errors`; value errors of the public API (``BoundError``,
``ValueError`` of ``make``/``RunConfig``) reach the user the same way.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys


class UsageError(ValueError):
    """A bad command line or argument value; the message names the problem and the expected form."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as :class:`UsageError` (no multi-line usage dump)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def one_line_errors(main):
    """Run a CLI ``main(argv) -> int``; bad input becomes ``error: <one line>`` on stderr and exit status 2."""
    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except (ValueError, TypeError, OSError) as exc:  # UsageError, BoundError and the API's value errors
            print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
            return 2
    return wrapped


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def output_folder(text: str):
    """argparse type: a folder to write into (missing is fine; an existing file is refused)."""
    from pathlib import Path
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; expected a folder (new or existing)")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be created: {str(probe)!r} is a file")
    return path
