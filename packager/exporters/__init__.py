"""Export recipes, one per (format, precision), in one registry.

A recipe writes one route's graph into a staging directory. Registration is explicit and visible
below; asking for an unknown combination lists the known ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from packager.errors import UsageError
from packager.graph import RouteGraph
from packager.runtime.manifest import Format, Precision


class Recipe(Protocol):
    format: Format
    precision: Precision

    def export(self, graph: RouteGraph, dest: Path, *, stem: str) -> list[str]:
        """Write ``graph`` under ``dest``; return the files written (graph file first), relative to ``dest``."""
        ...


class _Registry:
    def __init__(self) -> None:
        self._recipes: dict[tuple[Format, Precision], Recipe] = {}

    def register(self, recipe: Recipe) -> None:
        key = (recipe.format, recipe.precision)
        if key in self._recipes:
            raise ValueError(f"a recipe for {key[0].value}/{key[1].value} is already registered")
        self._recipes[key] = recipe

    def get(self, fmt: Format, precision: Precision) -> Recipe:
        try:
            return self._recipes[(fmt, precision)]
        except KeyError:
            raise UsageError(
                f"no export recipe for {fmt.value}/{precision.value}; available: {', '.join(self.available())}"
            ) from None

    def available(self) -> list[str]:
        return sorted(f"{f.value}/{p.value}" for f, p in self._recipes)


RECIPES = _Registry()


def _register_builtin() -> None:
    from packager.exporters.onnx import OnnxFp32

    RECIPES.register(OnnxFp32())


_register_builtin()
