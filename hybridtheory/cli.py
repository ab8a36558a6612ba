"""``hybridtheory`` console script.

Subcommands:

* ``figures [--quick] [--only ...] [--recompute] [--sweep]``: regenerate the default figures
  (same as ``python -m hybridtheory.figures``).
* ``sweep``: the long ramp epoch-complexity sweep down to eps = 0.05 (8 seeds), then redraw
  ``epoch_complexity.png`` with it.
* ``schedule FAMILY --eps EPS [--rho R] [--law sphere|gaussian] [--param k=v ...] [--import MODULE]``: print Corollary 1's
  schedule (mu, eta_x, eta_y, T and its five terms) for a family's certified constants.
* ``check [--pairs N] [--hess-points N] [--list] [--import MODULE]``: the registered families and the
  soundness/tightness table of their certified constants (``hgs_check``); ``--list`` only lists the families.

Bad input prints one ``error: ...`` line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import OneLineParser, UsageError, one_line_errors, positive_float


def _parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--param expects key=value (e.g. n=4), got {item!r}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def build_parser() -> OneLineParser:
    from .algorithm import LAWS
    from .objectives import BUILTIN

    ap = OneLineParser(prog="hybridtheory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", metavar="{figures,sweep,schedule,check}", parser_class=OneLineParser)
    for name, what in (("figures", "regenerate the default figures"), ("sweep", "the long ramp sweep"),
                       ("check", "soundness/tightness table of the certified constants")):
        sub.add_parser(name, help=f"{what} (see `hybridtheory {name} --help`)", add_help=False)
    sp = sub.add_parser("schedule", help="Corollary 1's schedule for a family")
    sp.add_argument("family", help=f"problem family: one of {', '.join(BUILTIN)}, or one registered by --import")
    sp.add_argument("--eps", type=positive_float, required=True, help="target gradient norm eps > 0")
    sp.add_argument("--rho", type=positive_float, default=1.0, help="eta_y / eta_x > 0 (default 1)")
    sp.add_argument("--law", choices=[law for law in LAWS if law != "rademacher"], default="sphere",
                    help="direction law (default sphere)")
    sp.add_argument("--param", nargs="*", default=[], help="family parameters as key=value (e.g. n=4 dx=6)")
    sp.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (it registers its families); repeatable")
    return ap


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "figures":
        from .figures.__main__ import main as figures_main
        return figures_main(argv[1:])
    if argv and argv[0] == "sweep":
        from .figures.__main__ import main as figures_main
        return figures_main(["--sweep", "--only", "epoch_complexity"] + argv[1:])
    if argv and argv[0] == "check":
        from .hgs_check import main as check_main
        return check_main(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.cmd is None:
        raise UsageError("no command given; choose one of figures, sweep, schedule, check (see hybridtheory --help)")

    from . import bounds
    from .objectives import import_family_modules, make
    import_family_modules(args.modules)
    problem = make(args.family, **_parse_params(args.param))
    c = problem.constants()
    sched = bounds.corollary1_schedule(c, problem.n, problem.dx, args.eps, problem.initial_gap(), args.rho, args.law)
    print(json.dumps({"problem": problem.describe(), "delta": problem.initial_gap(), **sched.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
