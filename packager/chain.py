"""Read a saved module chain safely, describe it, and load its torch reference.

Everything here that looks at a model folder runs *before* sentence-transformers sees it:
module types (a Router's nested ones included) are mapped through an allow-list to our own
``ModuleKind`` (nothing is imported from a string unless the user trusts remote code), module
paths must stay inside the folder, and weights that exist only as pickle files are refused unless
the user allows pickle.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packager.config_paths import check_config_paths
from packager.errors import MissingDependencyError, SourceError, UnsafeSourceError, UnsupportedModuleError
from packager.module_types import MODULE_TYPES
from packager.runtime.files import read_json, special_kind
from packager.runtime.integrity import digest_files
from packager.runtime.manifest import ChainKind, FileDigest, ModuleKind, SourceKind
from packager.weights import check_weight_files, loading_problems, watch_loading

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# What sentence-transformers and transformers load instead of pickle weights when present.
SAFE_WEIGHTS = frozenset({"model.safetensors", "model.safetensors.index.json"})
DEFAULT_ROUTE = "default"
# Version control, download caches and bytecode: never hashed, so nothing may load from them.
_SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__"})
# What the saved-model format's files are named like: a directory of such a name is a broken folder.
_FILE_SUFFIXES = frozenset({".json", ".safetensors", ".bin", ".pt", ".txt", ".model", ".jinja", ".py"})
# Configs are small; anything larger is not a config (a link to /dev/zero, say).
CONFIG_LIMIT = 64 << 20
_MAX_PATH = 1024
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                        "sentence_camembert_config.json", "sentence_albert_config.json",
                        "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
_SPARSE_KINDS = {ModuleKind.MLM_TRANSFORMER, ModuleKind.SPLADE_POOLING, ModuleKind.SPARSE_STATIC_EMBEDDING,
                 ModuleKind.SPARSE_AUTO_ENCODER}
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
# Modules that tokenize, and the files a tokenizer is made from: tokenizer.json, or the vocabulary
# files transformers converts. Without any, transformers makes a tokenizer of the special tokens
# alone, and every word becomes [UNK].
_TOKENIZING = {ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER, ModuleKind.SPARSE_STATIC_EMBEDDING}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model", "tekken.json")
# A folder without modules.json that sentence-transformers loads as a CrossEncoder of one module.
_IMPLICIT_CROSS_ENCODER = "sentence_transformers.base.modules.transformer.Transformer"


@dataclass(frozen=True)
class Source:
    """Where a chain comes from. ``boundary`` is the directory every file must resolve inside:
    the folder itself, or for a Hugging Face cache entry the repo's cache directory (its snapshot
    files are symlinks into ``blobs/``)."""

    kind: SourceKind
    location: str
    folder: Path
    boundary: Path
    revision: str | None = None


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    path: str  # relative to the chain folder
    type: str
    kind: ModuleKind
    config: dict[str, Any]
    routes: dict[str, tuple[ModuleSpec, ...]] = field(default_factory=dict)  # a Router's pipelines

    @property
    def transformer_task(self) -> str | None:
        if self.kind is ModuleKind.MLM_TRANSFORMER:
            return self.config.get("transformer_task", "fill-mask")
        if self.kind is ModuleKind.TRANSFORMER:
            return self.config.get("transformer_task", "feature-extraction")
        return None


@dataclass(frozen=True)
class ChainSpec:
    source: Source
    kind: ChainKind
    modules: tuple[ModuleSpec, ...]
    files: tuple[FileDigest, ...]
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def pipelines(self) -> dict[str, tuple[ModuleSpec, ...]]:
        """The module sequence of every route: a Router's routes (each followed by the modules
        after the Router), or the whole chain as the one default route."""
        first, *rest = self.modules
        if first.kind is ModuleKind.ROUTER:
            return {route: (*children, *rest) for route, children in first.routes.items()}
        return {DEFAULT_ROUTE: self.modules}

    def all_modules(self) -> list[ModuleSpec]:
        return _flatten(self.modules)


def _flatten(modules: tuple[ModuleSpec, ...]) -> list[ModuleSpec]:
    """Every module, a Router's nested ones included."""
    return [m for top in modules for m in (top, *[c for cs in top.routes.values() for c in cs])]


def resolve_source(source: str, *, revision: str | None = None) -> Source:
    """A local folder, or a model id already in the local Hugging Face cache (never downloaded)."""
    path = Path(source).expanduser()
    try:
        exists = path.exists()
        folder = path.resolve(strict=True) if exists else None
    except (OSError, RuntimeError, ValueError) as e:  # too long, a link loop, a NUL byte
        raise SourceError(f"{source[:200]!r}: not a usable path ({type(e).__name__}: {e})") from None
    if folder is not None:
        if not folder.is_dir():
            raise SourceError(f"{source} is a file; pass the folder that holds modules.json")
        return Source(kind=SourceKind.PATH, location=str(folder), folder=folder, boundary=folder)
    if not _REPO_ID.match(source):
        raise SourceError(f"{source}: no such folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise MissingDependencyError("resolving model ids needs huggingface_hub: pip install 'chain-packager[build]'") from e
    try:
        snapshot = Path(snapshot_download(repo_id=source, revision=revision, local_files_only=True))
    except Exception as e:  # huggingface_hub raises several unrelated types for "not cached"
        raise SourceError(
            f"{source!r} is neither a folder nor a model id in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}). "
            f"Download it first (`hf download {source}`) or pass a local folder. ({type(e).__name__})"
        ) from None
    folder = snapshot.resolve()
    return Source(kind=SourceKind.HUB, location=source, folder=folder, boundary=folder.parent.parent, revision=folder.name)


def read_chain(source: str, *, revision: str | None = None, trust_remote_code: bool = False,
               allow_pickle: bool = False) -> ChainSpec:
    """Read and check a saved chain without importing anything from it."""
    src = resolve_source(source, revision=revision)
    files = _scan_files(src)
    check_weight_files(src.folder, files)
    check_config_paths(src.folder, src.boundary, files)
    if not (src.folder / "modules.json").exists() and _is_classifier(src):
        # A CrossEncoder saved before sentence-transformers wrote modules.json for it.
        modules = (ModuleSpec(name="0", path="", type=_IMPLICIT_CROSS_ENCODER, kind=ModuleKind.TRANSFORMER,
                              config={"transformer_task": "sequence-classification"}),)
        _check_tokenizer(src.folder, "0")
        kind = ChainKind.CROSS_ENCODER
    else:
        entries = _read_modules_json(src)
        modules = tuple(_module_spec(src, e["name"], e["path"], e["type"], trust_remote_code) for e in entries)
        kind = _chain_kind(src, modules)
    chain = ChainSpec(source=src, kind=kind, modules=modules,
                      files=digest_files(src.folder, files), trust_remote_code=trust_remote_code,
                      allow_pickle=allow_pickle)
    if not allow_pickle:
        _refuse_pickle_only(chain.all_modules(), files)
    return chain


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


def _scan_files(src: Source) -> list[str]:
    """Every file of the folder as '/'-separated paths, each checked: a regular file with a
    UTF-8 name, or a link to one inside the boundary. Special files (a FIFO would block a reader
    forever), links to directories (their files would escape the checks and the digests), link
    loops and links leaving the boundary are refused. ``_SKIPPED_DIRS`` are neither checked nor
    hashed, so nothing may be loaded from them (``_module_dir``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src.folder, onerror=_unreadable):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(src.folder).as_posix()
            _check_name(rel)
            if _checked_entry(src, path, rel):
                found.append(rel)
    return sorted(found)


def _checked_entry(src: Source, path: Path, rel: str) -> bool:
    """Whether ``path`` is a file to read and hash (False for a real directory); refuses anything
    else."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        if path.suffix in _FILE_SUFFIXES:
            raise SourceError(f"{rel}: a directory where sentence-transformers and transformers expect a file")
        return False
    if stat.S_ISLNK(mode):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as e:  # a loop (RuntimeError before Python 3.13), a dangling link
            raise SourceError(f"{rel}: a symbolic link that cannot be followed ({type(e).__name__}: {e})") from None
        if not target.is_relative_to(src.boundary):
            raise UnsafeSourceError(f"{path} links outside {src.boundary}; refusing to read it")
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UnsafeSourceError(f"{rel}: a link to a directory; its files would not be checked or hashed. "
                                    "Copy the directory into the model folder instead")
    if not stat.S_ISREG(mode):
        raise UnsafeSourceError(f"{rel}: is {special_kind(mode)}; a saved model holds regular files only, and reading "
                                "this one could block or never end")
    return True


def _check_name(rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{rel.encode('utf-8', 'surrogateescape')!r}: a file name that is not UTF-8; the manifest "
                          "records every source file by name, in UTF-8. Rename it") from None


def _unreadable(error: OSError) -> None:
    raise SourceError(f"cannot read {error.filename}: {error.strerror or error}")


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
    skipped = sorted(_SKIPPED_DIRS.intersection(pure.parts))
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


def _module_spec(src: Source, name: str, rel: str, type_: str, trust_remote_code: bool) -> ModuleSpec:
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
        return _router_spec(src, name, rel, type_, trust_remote_code)
    names = _TRANSFORMER_CONFIGS if kind in (ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER) else ("config.json",)
    config = next((_read_json(directory / n, "") for n in names if (directory / n).is_file()), {})
    if not isinstance(config, dict):
        raise SourceError(f"{directory}: module config must be a JSON object")
    length = config.get("max_seq_length")
    if length is not None and (type(length) is not int or length < 1):
        raise SourceError(f"module {name!r}: max_seq_length must be a positive integer or null, got {length!r}")
    if kind in _TOKENIZING:
        _check_tokenizer(directory, name)
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


def _router_spec(src: Source, name: str, rel: str, type_: str, trust_remote_code: bool) -> ModuleSpec:
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
        children[model_id] = _module_spec(src, f"{name}/{model_id}", child_rel, child_type, trust_remote_code)
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
        kinds = {m.kind for m in _flatten(modules)}
        if kinds & _SPARSE_KINDS:
            return ChainKind.SPARSE_ENCODER
        return ChainKind.CROSS_ENCODER if ModuleKind.LOGIT_SCORE in kinds else ChainKind.SENTENCE_TRANSFORMER
    try:
        return ChainKind(model_type)
    except ValueError:
        raise UnsupportedModuleError(
            f"model_type {model_type!r} is not supported; supported: {[k.value for k in ChainKind]}"
        ) from None


def load_reference(chain: ChainSpec) -> Any:
    """The torch reference: sentence-transformers running the saved chain on CPU, offline."""
    try:
        import sentence_transformers as st
    except ImportError as e:
        raise MissingDependencyError("building needs the build extra: pip install 'chain-packager[build]'") from e
    model_class = {ChainKind.SENTENCE_TRANSFORMER: st.SentenceTransformer, ChainKind.CROSS_ENCODER: st.CrossEncoder,
                   ChainKind.SPARSE_ENCODER: st.SparseEncoder}[chain.kind]
    # Transformers must not fall back to pickle weights behind our back.
    model_kwargs = {} if chain.allow_pickle else {"use_safetensors": True}
    with watch_loading() as reports:
        try:
            model = model_class(str(chain.source.folder), device="cpu", local_files_only=True,
                                trust_remote_code=chain.trust_remote_code, model_kwargs=model_kwargs)
        except Exception as e:
            problems = loading_problems(reports)
            cause = "; ".join(problems) if problems else f"{type(e).__name__}: {e}"
            raise SourceError(f"sentence-transformers could not load {chain.source.location}: {cause}") from e
    problems = loading_problems(reports)
    if problems:
        raise SourceError(f"{chain.source.location}: the weights do not match the model's config:\n  "
                          + "\n  ".join(problems) + "\nThe reference would not be the saved model; fix the config or "
                          "the checkpoint.")
    return model.eval()
