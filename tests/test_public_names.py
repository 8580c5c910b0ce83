"""Each package's public names and modules, written out: renaming or removing one fails here, so
a change a user's imports would feel is made on purpose, in this list, in the same commit.

A package's public names are its ``__all__``, or else what its ``__init__`` itself defines
without a leading underscore (names it only imports are not offered); its public modules are
the ones without a leading underscore. ``packager.errors`` is listed too: it is the build
side's one door to the exception tree."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import packager

PUBLIC = {
    "packager": ([], ["bench", "builder", "chain", "cli", "errors", "exporters", "failpoints", "progress", "publish",
                      "quiet", "registry", "reports", "runtime", "scratch", "validators"]),
    "packager.bench": ([], ["host", "run", "speed", "worker"]),
    "packager.builder": (["BuildOptions", "BuildResult", "VariantResult", "build", "validate"],
                         ["auto", "contract", "model_card", "options", "packaging_toml", "pipeline", "prepare",
                          "result", "validate", "variant"]),
    "packager.chain": (["ChainSpec", "DEFAULT_ROUTE", "ModuleSpec", "Source", "check_compilable", "load_reference",
                        "read_chain", "resolve_source"],
                       ["allow_list", "architectures", "chat_template", "compilable", "config_paths", "describe",
                        "graph", "image_processor", "processing", "read", "reference", "source", "spec",
                        "st_internals", "steps", "tokenizer", "vision_graph", "weight_values", "weights"]),
    "packager.cli": (["log", "main"], ["commands", "output", "parser"]),
    "packager.exporters": (["RECIPES", "Registry"], ["dynamic_int8", "onnx", "openvino", "quantize", "recipe",
                                                     "sensitivity"]),
    "packager.registry": (["open_store"], ["lineage", "memory", "mlflow_store", "pyfunc", "requirements", "signature",
                                           "store"]),
    "packager.reports": (["FILES", "REPORT_SCHEMA_VERSION", "SCHEMA_FILE", "html_report", "markdown", "write_json",
                          "write_reports"], ["artifact", "html", "markdown", "plots"]),
    "packager.runtime": (["ArtifactIntegrityError", "CrossEncoderModel", "EmbeddingModel", "InvalidInputError",
                          "Manifest", "MissingDependencyError", "Model", "MultiVectorEncoderModel", "PackagerError",
                          "SparseBatch", "SparseEmbedding", "SparseEncoderModel", "UnsupportedVerbError", "load",
                          "read_manifest"],
                         ["backends", "batching", "chat", "cross_encoder", "embedding", "enums", "errors", "files",
                          "image_fetch", "image_inputs", "inputs", "integrity", "jsonable", "load", "manifest", "memo",
                          "messages", "model", "multi_vector_encoder", "precision", "registered", "routes", "runner",
                          "similarity", "sparse", "sparse_encoder", "text", "vision_inputs", "vision_positions",
                          "vision_route", "words"]),
    "packager.runtime.chat": (["BoundExceededError", "ChatTemplate", "PAIR_ROLES", "SKELETON_FILLERS",
                               "TemplateFailedError", "TemplateRefusedError", "TextInput", "compile_template"],
                              ["bounds", "budget", "checks", "environment", "errors", "filters", "folding", "rewrite",
                               "sandbox", "template", "template_globals"]),
    "packager.validators": ([], ["gates", "image_samples", "metrics", "parity", "report", "texts"]),
}
ERRORS = ["ArtifactIntegrityError", "ExportError", "InvalidInputError", "MissingDependencyError", "PackagerError",
          "ParityError", "RegistryError", "SourceError", "UnsafeSourceError", "UnsupportedModuleError",
          "UnsupportedVerbError", "UsageError"]


def _defined(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [n for n in names if not n.startswith("_")]


def _public(name: str) -> tuple[list[str], list[str]]:
    package = importlib.import_module(name)
    names = list(getattr(package, "__all__", [])) or _defined(Path(package.__file__))
    modules = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    return sorted(names), sorted(modules)


def test_every_package_is_listed():
    found = {"packager", *(m.name for m in pkgutil.walk_packages(packager.__path__, "packager.") if m.ispkg)}
    assert found == set(PUBLIC), "a package was added or removed: list its public names in PUBLIC"


def test_public_names_are_the_listed_ones():
    changed = {name: _public(name) for name in PUBLIC if _public(name) != PUBLIC[name]}
    assert changed == {}, "public names or modules changed (a rename users' imports feel): update PUBLIC on purpose"


def test_the_errors_door_offers_the_whole_tree():
    import packager.errors

    assert sorted(packager.errors.__all__) == ERRORS
    assert all(isinstance(getattr(packager.errors, n), type) for n in ERRORS)
