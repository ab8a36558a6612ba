"""Synthetic finite-sum families with certified hybrid-smoothness constants (THEORY.md section C).

``make(name, **params)`` builds a family by name; ``FAMILIES`` lists them. Adding a family is one
new file plus one line in ``_REGISTRY`` below.
"""
from __future__ import annotations

import importlib

from .base import DTYPE, FiniteSumProblem, ProblemOracle

# name -> "module:Class"; modules are imported lazily so one broken family cannot break the rest
_REGISTRY: dict[str, str] = {
    "ramp": "ramp:Ramp",
    "pl": "pl:PLQuadratic",
    "quadratic": "quadratic:CoupledQuadratic",
    "hyb": "hyb:HYB",
    "lora": "lora:LoRARegression",
    "catalogue": "catalogue:CatalogueProblem",
}

FAMILIES = tuple(_REGISTRY)


def family_class(name: str) -> type[FiniteSumProblem]:
    """The class registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem family {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make(name: str, **params) -> FiniteSumProblem:
    """Build the family ``name`` with keyword parameters (see each class's docstring)."""
    return family_class(name)(**params)


__all__ = ["DTYPE", "FAMILIES", "FiniteSumProblem", "ProblemOracle", "family_class", "make"]
