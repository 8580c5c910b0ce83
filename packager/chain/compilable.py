"""What this version compiles: each route starts with a text Transformer of a task its chain
kind takes (or, in a SparseEncoder, a SparseStaticEmbedding) and continues with modules that may
follow it. Everything else is refused before any work, naming the module that is the reason."""

from __future__ import annotations

from packager.chain.spec import ChainSpec, ModuleSpec
from packager.errors import UnsupportedModuleError
from packager.runtime.manifest import ChainKind, ModuleKind

# What each chain kind's pipelines may start with: Transformer tasks (or a static sparse input).
_INPUT_TASKS = {
    ChainKind.SENTENCE_TRANSFORMER: ("feature-extraction",),
    ChainKind.CROSS_ENCODER: ("sequence-classification", "text-generation", "feature-extraction"),
    ChainKind.SPARSE_ENCODER: ("fill-mask", "feature-extraction"),
}
# What may follow the input module.
_AFTER_INPUT = {ModuleKind.POOLING, ModuleKind.DENSE, ModuleKind.LAYER_NORM, ModuleKind.NORMALIZE,
                ModuleKind.DROPOUT, ModuleKind.LOGIT_SCORE, ModuleKind.SPLADE_POOLING, ModuleKind.SPARSE_AUTO_ENCODER,
                ModuleKind.CUSTOM}
# Transformer settings that make encode_query/encode_document tokenize differently from encode.
_PER_TASK_SETTINGS = ("query_length", "document_length", "query_expansion")


def check_compilable(chain: ChainSpec) -> None:
    """Refuse, before any work, a chain this version cannot compile into one graph per route;
    name every module that is the reason."""
    reasons = [f"a Router must be the first module; {m.name!r} is not" for m in chain.modules[1:]
               if m.kind is ModuleKind.ROUTER]
    pipelines = chain.pipelines()
    for route, modules in pipelines.items():
        prefix = f"route {route!r}: " if len(pipelines) > 1 else ""
        reasons += [prefix + r for r in _pipeline_problems(chain.kind, modules)]
    if reasons:
        tasks = "; ".join(f"{k.value}: {', '.join(t)}" for k, t in _INPUT_TASKS.items())
        raise UnsupportedModuleError(
            "this chain cannot be compiled:\n  " + "\n  ".join(reasons)
            + f"\nA route starts with a text Transformer ({tasks}) or, in a SparseEncoder, a "
            f"SparseStaticEmbedding, followed by any of: {', '.join(sorted(k.value for k in _AFTER_INPUT))}."
        )


def _pipeline_problems(kind: ChainKind, modules: tuple[ModuleSpec, ...]) -> list[str]:
    first, *rest = modules
    problems = [f"module {m.name!r} is sentence-transformers' {m.type.rsplit('.', 1)[-1]}, which this version "
                "does not compile" for m in modules if m.kind is ModuleKind.NOT_COMPILED]
    if first.kind is ModuleKind.NOT_COMPILED:
        return problems
    if first.transformer_task is not None:
        per_task = [key for key in _PER_TASK_SETTINGS if first.config.get(key) is not None]
        if per_task:
            problems.append(f"module {first.name!r} sets {per_task}: per-task lengths and query expansion are not "
                            "compiled yet")
        if first.transformer_task not in _INPUT_TASKS[kind]:
            problems.append(f"module {first.name!r}: a {kind.value} cannot start with a "
                            f"{first.transformer_task!r} Transformer")
        modalities = set(first.config.get("modality_config") or {"text": None})
        if modalities != {"text"}:
            problems.append(f"module {first.name!r}: only text input is compiled, not {sorted(modalities)} "
                            "(chat templates and images are not)")
    elif not (first.kind is ModuleKind.SPARSE_STATIC_EMBEDDING and kind is ChainKind.SPARSE_ENCODER):
        problems.append(f"module {first.name!r} ({first.type}) cannot start a {kind.value} route")
    problems += [f"module {m.name!r} ({m.type}, {m.kind.value}) cannot follow the input module"
                 for m in rest if m.kind not in _AFTER_INPUT | {ModuleKind.NOT_COMPILED}]
    return problems
