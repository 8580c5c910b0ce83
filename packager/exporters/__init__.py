"""Export recipes in one registry, keyed by (format, precision).

A recipe writes one route's graph into a staging directory. Several recipes can serve one key:
they are registered fastest first (as expected on CPUs with int8 instructions), one of them is
the default, and ``--precision auto`` builds them all, gates each, and keeps the one measured
fastest. Registration is explicit and visible below; asking for an unknown combination lists the
known ones, and combinations that cannot work say why.
"""

from __future__ import annotations

from collections.abc import Callable

from packager.errors import UsageError
from packager.exporters.recipe import Recipe
from packager.runtime.enums import Format, Precision


class Registry:
    """Recipes by (format, precision), fastest first, one default each."""

    def __init__(self) -> None:
        self._recipes: dict[tuple[Format, Precision], list[Recipe]] = {}
        self._defaults: dict[tuple[Format, Precision], Recipe] = {}
        self._explicit_defaults: set[tuple[Format, Precision]] = set()
        self._unavailable: dict[tuple[Format, Precision], tuple[str, Callable[[], bool]]] = {}

    def register(self, recipe: Recipe, *, default: bool = False) -> None:
        key = (recipe.format, recipe.precision)
        if any(r.name == recipe.name for recipes in self._recipes.values() for r in recipes):
            raise ValueError(f"a recipe named {recipe.name!r} is already registered")
        if default and key in self._explicit_defaults:
            raise ValueError(f"{key[0].value}/{key[1].value} already has a default recipe")
        self._recipes.setdefault(key, []).append(recipe)
        if default:
            self._explicit_defaults.add(key)
        if default or key not in self._defaults:  # the first registered, unless another is named default
            self._defaults[key] = recipe

    def unavailable(self, fmt: Format, precision: Precision, reason: str, *,
                    here: Callable[[], bool] = lambda: True) -> None:
        """A combination that cannot work (on a host where ``here()`` is true), with the reason
        users get when they ask for it, before any work."""
        self._unavailable[(fmt, precision)] = (reason, here)

    def candidates(self, fmt: Format, precision: Precision) -> list[Recipe]:
        """Every recipe for the combination, fastest first."""
        key = (fmt, precision)
        reason, here = self._unavailable.get(key, ("", lambda: False))
        if here():
            raise UsageError(f"{fmt.value}/{precision.value} is not available: {reason}")
        if key not in self._recipes:
            raise UsageError(f"no export recipe for {fmt.value}/{precision.value}; "
                             f"available: {', '.join(self.available())}")
        return list(self._recipes[key])

    def get(self, fmt: Format, precision: Precision, name: str | None = None) -> Recipe:
        """The named recipe for the combination, or its default."""
        recipes = self.candidates(fmt, precision)
        if name is None:
            return self._defaults[(fmt, precision)]
        for recipe in recipes:
            if recipe.name == name:
                return recipe
        raise UsageError(f"recipe {name!r} does not make {fmt.value}/{precision.value}; "
                         f"those that do: {', '.join(r.name for r in recipes)}")

    def named(self, name: str) -> Recipe:
        for recipe in (r for recipes in self._recipes.values() for r in recipes):
            if recipe.name == name:
                self.candidates(recipe.format, recipe.precision)  # refused here as when asked for by precision
                return recipe
        raise UsageError(f"no recipe named {name!r}; recipes: {', '.join(self.available())}")

    def available(self) -> list[str]:
        return sorted(f"{f.value}/{p.value} ({', '.join(r.name for r in rs)})" for (f, p), rs in self._recipes.items())


RECIPES = Registry()


def _register_builtin() -> None:
    from packager.exporters import openvino as openvino_recipes
    from packager.exporters.onnx import OnnxFp32
    from packager.exporters.openvino import (
        OpenVinoBf16,
        OpenVinoFp16,
        OpenVinoFp32,
        OpenVinoInt8,
        OpenVinoInt8WeightsOnly,
    )
    from packager.exporters.quantize import OnnxInt8Dynamic, OnnxInt8Static

    RECIPES.register(OnnxFp32())
    RECIPES.register(OnnxInt8Static())  # no activation ranges at run time, but static ranges cost accuracy
    RECIPES.register(OnnxInt8Dynamic(), default=True)
    RECIPES.register(OpenVinoFp32())
    RECIPES.register(OpenVinoFp16())
    RECIPES.register(OpenVinoBf16())
    RECIPES.register(OpenVinoInt8())  # int8 weights and activations: fast where the CPU has VNNI/AMX
    RECIPES.register(OpenVinoInt8WeightsOnly(), default=True)  # int8 weights only: a quarter of the size
    RECIPES.unavailable(Format.ONNX, Precision.FP16, (
        "onnxruntime's CPU provider, which the loader uses, has no fp16 kernels for most transformer ops and would "
        "run such a graph through casts to fp32; fp16 ONNX is a GPU format. Use --format openvino --precision fp16 "
        "(fp16 weights, half the size), or int8."))
    RECIPES.unavailable(Format.OPENVINO, Precision.BF16, (
        "this CPU has no bf16 arithmetic (AVX512_BF16 or AMX), so OpenVINO would compute in f32 here and the gate "
        "could not measure what bf16 servers compute; build bf16 on a host that has it, or build fp32"),
        here=lambda: not openvino_recipes.bf16_arithmetic())
    RECIPES.unavailable(Format.ONNX, Precision.BF16, (
        "onnxruntime's CPU provider computes transformer graphs in fp32 only. Use --format openvino --precision bf16 "
        "on a CPU with bf16 arithmetic (AVX512_BF16 or AMX)."))


_register_builtin()
