"""``hybridtheory`` console script.

Subcommands:

* ``figures [--quick] [--only ...] [--recompute] [--sweep]``: regenerate the default figures
  (same as ``python -m hybridtheory.figures``).
* ``sweep``: the long ramp epoch-complexity sweep down to eps = 0.05 (8 seeds), then redraw
  ``epoch_complexity.png`` with it.
* ``schedule FAMILY --eps EPS [--rho R] [--law sphere|gaussian] [--param k=v ...] [--import MODULE]``: print Corollary 1's
  schedule (mu, eta_x, eta_y, T and its five terms) for a family's certified constants.
* ``check [--report] [--import MODULE]``: the registered families, and with ``--report`` the
  soundness/tightness table of their certified constants (``hgs_check``).
"""
from __future__ import annotations

import argparse
import json
import sys


def _parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --param expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


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
    ap = argparse.ArgumentParser(prog="hybridtheory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("figures", "sweep", "check"):
        sub.add_parser(name, help=f"see `hybridtheory {name} --help`")
    sp = sub.add_parser("schedule", help="Corollary 1's schedule for a family")
    sp.add_argument("family")
    sp.add_argument("--eps", type=float, required=True)
    sp.add_argument("--rho", type=float, default=1.0, help="eta_y / eta_x (default 1)")
    sp.add_argument("--law", choices=["sphere", "gaussian"], default="sphere")
    sp.add_argument("--param", nargs="*", default=[], help="family parameters as key=value")
    sp.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (it registers its families); repeatable")
    args = ap.parse_args(argv)

    from . import bounds
    from .objectives import import_family_modules, make
    try:
        import_family_modules(args.modules)
        problem = make(args.family, **_parse_params(args.param))
        c = problem.constants()
        sched = bounds.corollary1_schedule(c, problem.n, problem.dx, args.eps, problem.initial_gap(), args.rho, args.law)
    except (ValueError, TypeError) as e:  # BoundError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"problem": problem.describe(), "delta": problem.initial_gap(), **sched.to_dict()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
