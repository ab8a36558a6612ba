"""Synthetic finite-sum families with certified hybrid-smoothness constants (proofs/01-hgs.md §1.4 and each module).

``make(name, **params)`` builds a family by name; ``families()`` (or ``FAMILIES``) lists the registered
names. A family in *your own* module is one call away from everything that takes a family name
(``make``, the runner, ``measurement.epoch_complexity``, ``hybridtheory schedule``, ``hybridtheory check``)::

    from hybridtheory.objectives import register
    register("mine", MyFamily)          # MyFamily subclasses FiniteSumProblem

The built-in families are registered here by "module:Class" and imported lazily, so one broken family
cannot break the rest.
"""
from __future__ import annotations

import importlib
import inspect
import math
import numbers

from .base import DTYPE, FiniteSumProblem, ProblemOracle

# name -> "module:Class" (built-in, lazy) or the class itself (registered at run time)
_REGISTRY: dict[str, str | type[FiniteSumProblem]] = {
    "ramp": "ramp:Ramp",
    "hetero": "hetero:HeterogeneousRamp",
    "pl": "pl:PLQuadratic",
    "quadratic": "quadratic:CoupledQuadratic",
    "hyb": "hyb:HYB",
    "lora": "lora:LoRARegression",
    "catalogue": "catalogue:CatalogueProblem",
}
BUILTIN = tuple(_REGISTRY)


def register(name: str, cls: type[FiniteSumProblem], *, replace: bool = False) -> type[FiniteSumProblem]:
    """Register ``cls`` (a :class:`FiniteSumProblem` subclass) as the family ``name``; returns ``cls``.

    Raises ``ValueError`` if ``name`` is taken (pass ``replace=True`` to rebind a name you registered;
    built-in names cannot be replaced) or ``TypeError`` if ``cls`` is not a concrete problem class."""
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"family name must be a non-empty word (letters, digits, '_', '-'), got {name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, FiniteSumProblem)) or inspect.isabstract(cls):
        raise TypeError(f"register({name!r}, ...) needs a concrete FiniteSumProblem subclass, got {cls!r}")
    if name in BUILTIN:
        raise ValueError(f"problem family {name!r} is already registered (built-in families cannot be replaced)")
    if name in _REGISTRY and not replace:
        raise ValueError(f"problem family {name!r} is already registered; pass replace=True to rebind it")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a family registered with :func:`register` (built-in families stay)."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in family and cannot be unregistered")
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem family {name!r}")
    del _REGISTRY[name]


def families() -> tuple[str, ...]:
    """The registered family names (built-in first, then in registration order)."""
    return tuple(_REGISTRY)


def __getattr__(attr: str):
    if attr == "FAMILIES":  # live view: families registered after import are included
        return families()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def import_family_modules(modules) -> None:
    """Import user modules that register families (the ``--import MODULE`` option of the CLIs).

    Raises ``ValueError`` naming the module if it cannot be imported."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ValueError(f"cannot import family module {mod!r} (expected an importable module name, "
                             f"e.g. mypackage.families): {e}") from None


def family_class(name: str) -> type[FiniteSumProblem]:
    """The class registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem family {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    entry = _REGISTRY[name]
    if not isinstance(entry, str):
        return entry
    module, cls = entry.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def _check_params(name: str, cls: type[FiniteSumProblem], params: dict) -> None:
    """Refuse unknown parameters and values of the wrong kind, judged from the constructor's defaults:
    an int default asks for an integer (>= 1 if the default is >= 1, else >= 0), a float default for a
    finite number."""
    sig = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    known = {k: p for k, p in sig.parameters.items() if k != "self" and p.kind is not p.VAR_KEYWORD}
    for key, value in params.items():
        if key not in known:
            if accepts_any:
                continue
            raise ValueError(f"family {name!r} has no parameter {key!r}; its parameters: {', '.join(known)}")
        default = known[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"family {name!r}: {key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            low = 1 if default >= 1 else 0
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"family {name!r}: {key} must be an integer >= {low}, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"family {name!r}: {key} must be a finite number, got {value!r}")


def make(name: str, **params) -> FiniteSumProblem:
    """Build the family ``name`` with keyword parameters (see each class's docstring).

    Bad parameters raise ``ValueError`` naming the parameter and the expected form."""
    cls = family_class(name)
    _check_params(name, cls, params)
    try:
        return cls(**params)
    except (ValueError, TypeError, ArithmeticError, IndexError) as e:  # the family's own checks, or numpy's
        raise ValueError(f"family {name!r} cannot be built with {params}: {str(e).splitlines()[0]}") from None


__all__ = ["DTYPE", "FAMILIES", "FiniteSumProblem", "ProblemOracle", "families", "family_class", "import_family_modules", "make",
           "register", "unregister"]
