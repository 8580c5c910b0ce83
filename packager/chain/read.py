"""Read a saved module chain safely: ``read_chain`` scans the folder (``source``), checks its
weight files and the paths its configs name, and reads modules.json (and a Router's config)
without importing anything from it: module types map through the allow-list to our own
``ModuleKind``, module paths must be real folders inside the model folder, and weights that exist
only as pickle files are refused unless the user allows pickle.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from packager.chain.allow_list import LEGACY_CLIP_MODALITIES, MODULE_TYPES
from packager.chain.chat_template import check_chat_templates
from packager.chain.config_paths import check_config_paths
from packager.chain.source import SKIPPED_DIRS, Source, resolve_source, scan_files
from packager.chain.spec import ChainSpec, ModuleSpec, flatten
from packager.chain.weights import check_weight_files
from packager.errors import SourceError, UnsafeSourceError, UnsupportedModuleError
from packager.runtime.enums import ChainKind, ModuleKind
from packager.runtime.files import read_json
from packager.runtime.integrity import digest_files

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# What sentence-transformers and transformers load instead of pickle weights when present.
SAFE_WEIGHTS = frozenset({"model.safetensors", "model.safetensors.index.json"})
# Configs are small; anything larger is not a config (a link to /dev/zero, say).
CONFIG_LIMIT = 64 << 20
_MAX_PATH = 1024
_TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                        "sentence_camembert_config.json", "sentence_albert_config.json",
                        "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
_SPARSE_KINDS = {ModuleKind.MLM_TRANSFORMER, ModuleKind.SPLADE_POOLING, ModuleKind.SPARSE_STATIC_EMBEDDING,
                 ModuleKind.SPARSE_AUTO_ENCODER}
# Modules that tokenize, and the files a tokenizer is made from: tokenizer.json, or the vocabulary
# files transformers converts. Without any, transformers makes a tokenizer of the special tokens
# alone, and every word becomes [UNK].
_TOKENIZING = {ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER, ModuleKind.SPARSE_STATIC_EMBEDDING,
               ModuleKind.STATIC_EMBEDDING}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model", "tekken.json")
# Modules whose config file has its own name.
_CONFIG_FILES = {ModuleKind.WORD_EMBEDDINGS: ("wordembedding_config.json",), ModuleKind.CNN: ("cnn_config.json",),
                 ModuleKind.LSTM: ("lstm_config.json",)}
# A folder without modules.json that sentence-transformers loads as a CrossEncoder of one module.
_IMPLICIT_CROSS_ENCODER = "sentence_transformers.base.modules.transformer.Transformer"


def read_chain(source: str, *, revision: str | None = None, trust_remote_code: bool = False,
               allow_pickle: bool = False) -> ChainSpec:
    """Read and check a saved chain without importing anything from it."""
    src = resolve_source(source, revision=revision)
    files = scan_files(src)
    check_weight_files(src.folder, files)
    check_config_paths(src.folder, src.boundary, files)
    check_chat_templates(src.folder, files)
    modules: tuple[ModuleSpec, ...]
    if not (src.folder / "modules.json").exists() and _is_classifier(src):
        # A CrossEncoder saved before sentence-transformers wrote modules.json for it.
        modules = (ModuleSpec(name="0", path="", type=_IMPLICIT_CROSS_ENCODER, kind=ModuleKind.TRANSFORMER,
                              config={"transformer_task": "sequence-classification"}),)
        _check_tokenizer(src.folder, "0")
        kind = ChainKind.CROSS_ENCODER
    else:
        entries = _read_modules_json(src)
        modules = tuple(_module_spec(src, e["name"], rel=e["path"], type_=e["type"],
                                     trust_remote_code=trust_remote_code) for e in entries)
        kind = _chain_kind(src, modules)
    chain = ChainSpec(source=src, kind=kind, modules=modules,
                      files=digest_files(src.folder, files), trust_remote_code=trust_remote_code,
                      allow_pickle=allow_pickle)
    if not allow_pickle:
        _refuse_pickle_only(chain.all_modules(), files)
    return chain


def _read_json(path: Path, what: str) -> Any:
    try:
        return read_json(path, limit=CONFIG_LIMIT, error=SourceError)
    except FileNotFoundError:
        raise SourceError(f"{path.parent}: no {path.name}; {what}") from None


def _read_modules_json(src: Source) -> list[dict[str, Any]]:
    entries = _read_json(src.folder / "modules.json", "this is not a saved sentence-transformers chain")
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{src.folder}/modules.json must be a non-empty list of modules")
    problems = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is not an object")
            continue
        for key, tp in (("idx", int), ("name", str), ("path", str), ("type", str)):
            if type(entry.get(key)) is not tp:
                problems.append(f"entry {i}: {key!r} must be a {tp.__name__}, got {entry.get(key)!r}")
    if not problems:
        for key in ("idx", "name"):
            values = [e[key] for e in entries]
            if len(set(values)) != len(values):
                problems.append(f"duplicate {key} values: {values}")
    if problems:
        raise SourceError(f"{src.folder}/modules.json is malformed:\n  " + "\n  ".join(problems))
    return sorted(entries, key=lambda e: e["idx"])


def _module_dir(src: Source, rel: str) -> Path:
    """A module's folder: a real directory inside the model folder (no links on the way), outside
    the folders that are not checked or hashed."""
    shown = f"{rel[:80]!r}{'...' if len(rel) > 80 else ''}"
    if "\0" in rel or len(rel) > _MAX_PATH or not rel.isprintable():
        raise SourceError(f"module path {shown} is not a usable path (control characters, or over {_MAX_PATH} "
                          "characters)")
    pure = PurePosixPath(rel)
    if "\\" in rel or pure.is_absolute() or ".." in pure.parts:
        raise UnsafeSourceError(f"module path {shown} leaves the model folder; refusing it")
    skipped = sorted(SKIPPED_DIRS.intersection(pure.parts))
    if skipped:
        raise UnsafeSourceError(f"module path {shown} lies in {skipped[0]!r}, whose files are not checked or hashed; "
                                "a module must live in an ordinary folder of the model")
    path = src.folder / rel
    try:
        real = os.path.realpath(path, strict=False)
    except (OSError, ValueError) as e:
        raise SourceError(f"module path {shown}: {e}") from None
    if not Path(real).is_relative_to(src.folder):
        raise UnsafeSourceError(f"module path {shown} resolves outside the model folder (a symlink?); refusing it")
    if Path(real) != src.folder / pure:
        raise UnsafeSourceError(f"module path {shown} goes through a symbolic link; module folders must be real "
                                "directories, whose files are checked and hashed")
    return path


def _module_spec(src: Source, name: str, *, rel: str, type_: str, trust_remote_code: bool) -> ModuleSpec:
    directory = _module_dir(src, rel)
    if "--" in type_ or "/" in type_:
        raise UnsafeSourceError(
            f"module {name!r} has type {type_!r}: a reference to code in another repository, which sentence-"
            "transformers would download and run. This tool never fetches code; copy the module into the folder "
            "and pass --trust-remote-code if you trust it."
        )
    kind = MODULE_TYPES.get(type_)
    if not directory.is_dir() and kind is not ModuleKind.NORMALIZE:  # Normalize saves nothing, so no folder
        raise SourceError(f"module {name!r}: its folder {rel!r} is missing from {src.folder}")
    if kind is None:
        if not trust_remote_code:
            known = sorted({k.value for k in MODULE_TYPES.values()})
            raise UnsupportedModuleError(
                f"module {name!r} has type {type_!r}, which is not one of sentence-transformers' own modules; "
                f"supported: {', '.join(known)}. Pass --trust-remote-code to import it (this runs code from the "
                "model folder)."
            )
        kind = ModuleKind.CUSTOM
    if kind is ModuleKind.ROUTER:
        return _router_spec(src, name, rel=rel, type_=type_, trust_remote_code=trust_remote_code)
    names = _TRANSFORMER_CONFIGS if kind in (ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER) \
        else _CONFIG_FILES.get(kind, ("config.json",))
    config: Any = next((_read_json(directory / n, "") for n in names if (directory / n).is_file()), {})
    if not isinstance(config, dict):
        raise SourceError(f"{directory}: module config must be a JSON object")
    length = config.get("max_seq_length")
    if length is not None and (type(length) is not int or length < 1):
        raise SourceError(f"module {name!r}: max_seq_length must be a positive integer or null, got {length!r}")
    if kind in _TOKENIZING:
        _check_tokenizer(directory, name)
    if type_.endswith(".CLIPModel") and "modality_config" not in config:
        config = {**config, "modality_config": LEGACY_CLIP_MODALITIES, "module_output_name": "sentence_embedding"}
    return ModuleSpec(name=name, path=rel, type=type_, kind=kind, config=config)


def _check_tokenizer(directory: Path, name: str) -> None:
    present = [f for f in _TOKENIZER_FILES if (directory / f).is_file()]
    if not present:
        raise SourceError(f"module {name!r} has no tokenizer in {directory} (none of {', '.join(_TOKENIZER_FILES)})")
    if "tokenizer.json" in present:
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for every parse error
            raise SourceError(f"{directory / 'tokenizer.json'}: not a tokenizer the tokenizers library can read "
                              f"({str(e).splitlines()[0]})") from None


def _router_spec(src: Source, name: str, *, rel: str, type_: str, trust_remote_code: bool) -> ModuleSpec:
    """A Router names more module types and folders in its own config: check them like the rest."""
    directory = _module_dir(src, rel)
    config_path = next((directory / n for n in ("router_config.json", "config.json") if (directory / n).is_file()),
                       directory / "router_config.json")
    config = _read_json(config_path, "a Router needs its router_config.json")
    types, structure = (config.get(k) if isinstance(config, dict) else None for k in ("types", "structure"))
    if not isinstance(types, dict) or not isinstance(structure, dict) or not structure:
        raise SourceError(f"{config_path}: needs 'types' and 'structure' objects")
    children = {}
    for model_id, child_type in types.items():
        if not isinstance(child_type, str):
            raise SourceError(f"{config_path}: type of {model_id!r} must be a string")
        child_rel = PurePosixPath(rel, model_id).as_posix()
        children[model_id] = _module_spec(src, f"{name}/{model_id}", rel=child_rel, type_=child_type,
                                          trust_remote_code=trust_remote_code)
    routes = {}
    for route, ids in structure.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SourceError(f"{config_path}: route {route!r} must be a list of module names, got {ids!r:.80}")
        missing = [i for i in ids if i not in children]
        if missing:
            raise SourceError(f"{config_path}: route {route!r} names unknown modules {missing}")
        routes[route] = tuple(children[i] for i in ids)
    return ModuleSpec(name=name, path=rel, type=type_, kind=ModuleKind.ROUTER,
                      config=config.get("parameters") or {}, routes=routes)


def _refuse_pickle_only(modules: list[ModuleSpec], files: list[str]) -> None:
    """A module directory with pickle files and no model.safetensors would have them loaded, and
    loading pickle can run code."""
    for module in modules:
        prefix = PurePosixPath(module.path)
        here = [PurePosixPath(f) for f in files if PurePosixPath(f).parent == prefix]
        pickles = [p.name for p in here if p.suffix in PICKLE_SUFFIXES]
        if pickles and not SAFE_WEIGHTS.intersection(p.name for p in here):
            raise UnsafeSourceError(
                f"module {module.name!r} has pickle weights only ({', '.join(sorted(pickles))}); loading pickle can "
                "run arbitrary code. Convert them to safetensors, or pass --allow-pickle if you trust this folder."
            )


def _is_classifier(src: Source) -> bool:
    config = _read_json(src.folder / "config.json", "") if (src.folder / "config.json").is_file() else {}
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return any(str(a).endswith("ForSequenceClassification") for a in architectures or [])


def _chain_kind(src: Source, modules: tuple[ModuleSpec, ...]) -> ChainKind:
    config_path = src.folder / "config_sentence_transformers.json"
    model_type = None
    if config_path.is_file():
        config = _read_json(config_path, "")
        model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:
        kinds = {m.kind for m in flatten(modules)}
        if ModuleKind.MULTI_VECTOR_MASK in kinds:
            return ChainKind.MULTI_VECTOR_ENCODER
        if kinds & _SPARSE_KINDS:
            return ChainKind.SPARSE_ENCODER
        return ChainKind.CROSS_ENCODER if ModuleKind.LOGIT_SCORE in kinds else ChainKind.SENTENCE_TRANSFORMER
    try:
        return ChainKind(model_type)
    except ValueError:
        raise UnsupportedModuleError(
            f"model_type {model_type!r} is not supported; supported: {[k.value for k in ChainKind]}"
        ) from None
