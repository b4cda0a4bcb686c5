"""pinlab programs equivalent to the SPIN anchor models (hillf.pml, pinbias.pml)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pinlab.anchors.hillf import hillf
from pinlab.anchors.pinbias import pinbias
from pinlab.explore import MachineProgram

ANCHORS: dict[str, Callable[..., MachineProgram]] = {"hillf": hillf, "pinbias": pinbias}


def parameters(model: str) -> dict[str, int]:
    """The -D parameters a model takes, with their defaults (as in the .pml file)."""
    sig = inspect.signature(ANCHORS[model])
    return {name: int(p.default) for name, p in sig.parameters.items()}


def build(model: str, defines: dict[str, int]) -> MachineProgram:
    """The program for ``model`` with ``-D`` parameters; ValueError for unknown names."""
    if model not in ANCHORS:
        raise ValueError(f"unknown model {model!r} (choose from {', '.join(ANCHORS)})")
    known = parameters(model)
    unknown = sorted(set(defines) - set(known))
    if unknown:
        raise ValueError(
            f"{model} has no parameter {', '.join(unknown)} (it takes {', '.join(known)})"
        )
    return ANCHORS[model](**{**known, **defines})


__all__ = ["ANCHORS", "build", "hillf", "parameters", "pinbias"]
