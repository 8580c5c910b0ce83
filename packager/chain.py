"""Read a saved module chain safely, describe it, and load its torch reference.

Everything here that looks at a model folder runs *before* sentence-transformers sees it:
module types are mapped through an allow-list to our own ``ModuleKind`` (nothing is imported from
a string unless the user trusts remote code), module paths must stay inside the folder, and
weights that exist only as pickle files are refused unless the user allows pickle.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packager.errors import MissingDependencyError, SourceError, UnsafeSourceError, UnsupportedModuleError
from packager.runtime.integrity import digest_files
from packager.runtime.manifest import ChainKind, FileDigest, ModuleKind, Side, SourceKind, TokenizerSpec

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# What sentence-transformers and transformers load instead of pickle weights when present.
SAFE_WEIGHTS = frozenset({"model.safetensors", "model.safetensors.index.json"})
_SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                        "sentence_camembert_config.json", "sentence_albert_config.json",
                        "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")


def _type_paths(kind: ModuleKind, class_name: str, *modules: str) -> dict[str, ModuleKind]:
    """All spellings of one class: ``package.Class`` for each (re-)exporting package and
    ``package.file.Class`` for its defining file, each under ``sentence_transformers.``."""
    return {f"sentence_transformers.{module}.{class_name}": kind for module in modules}


# The allow-list: every `type` string sentence-transformers (v2 to v6) writes for its own modules.
# Old saves name the re-exporting package (`sentence_transformers.models.Pooling`); v5.4+ name the
# defining file (`sentence_transformers.sentence_transformer.modules.pooling.Pooling`).
MODULE_TYPES: dict[str, ModuleKind] = {
    **_type_paths(ModuleKind.TRANSFORMER, "Transformer", "models", "base.modules", "base.modules.transformer",
                  "sentence_transformer.modules", "cross_encoder.modules", "sparse_encoder.modules",
                  "sparse_encoder.models"),
    **_type_paths(ModuleKind.POOLING, "Pooling", "models", "sentence_transformer.modules",
                  "sentence_transformer.modules.pooling"),
    **_type_paths(ModuleKind.DENSE, "Dense", "models", "base.modules", "base.modules.dense",
                  "sentence_transformer.modules", "cross_encoder.modules", "sparse_encoder.modules",
                  "sparse_encoder.models"),
    **_type_paths(ModuleKind.NORMALIZE, "Normalize", "models", "base.modules", "base.modules.normalize",
                  "sentence_transformer.modules", "sentence_transformer.modules.normalize"),
    **_type_paths(ModuleKind.LAYER_NORM, "LayerNorm", "models", "sentence_transformer.modules",
                  "sentence_transformer.modules.layer_norm"),
    **_type_paths(ModuleKind.LOGIT_SCORE, "LogitScore", "cross_encoder.modules", "cross_encoder.modules.logit_score"),
    **_type_paths(ModuleKind.MLM_TRANSFORMER, "MLMTransformer", "sparse_encoder.models", "sparse_encoder.modules",
                  "sparse_encoder.modules.mlm_transformer"),
    **_type_paths(ModuleKind.SPLADE_POOLING, "SpladePooling", "sparse_encoder.models", "sparse_encoder.modules",
                  "sparse_encoder.modules.splade_pooling"),
    **_type_paths(ModuleKind.SPARSE_STATIC_EMBEDDING, "SparseStaticEmbedding", "sparse_encoder.models",
                  "sparse_encoder.modules", "sparse_encoder.modules.sparse_static_embedding"),
    **_type_paths(ModuleKind.SPARSE_AUTO_ENCODER, "SparseAutoEncoder", "sparse_encoder.models",
                  "sparse_encoder.modules", "sparse_encoder.modules.sparse_auto_encoder"),
    **_type_paths(ModuleKind.ROUTER, "Router", "models", "base.modules", "base.modules.router",
                  "sentence_transformer.modules", "cross_encoder.modules", "sparse_encoder.modules"),
    **_type_paths(ModuleKind.ROUTER, "Asym", "models", "base.modules.router", "sentence_transformer.modules"),
}

_SPARSE_KINDS = {ModuleKind.MLM_TRANSFORMER, ModuleKind.SPLADE_POOLING, ModuleKind.SPARSE_STATIC_EMBEDDING,
                 ModuleKind.SPARSE_AUTO_ENCODER}
# What this version compiles: a feature-extraction Transformer followed by these modules.
_COMPILABLE_AFTER_TRANSFORMER = {ModuleKind.POOLING, ModuleKind.DENSE, ModuleKind.LAYER_NORM, ModuleKind.NORMALIZE}


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
    idx: int
    name: str
    path: str
    type: str
    kind: ModuleKind
    config: dict[str, Any]


@dataclass(frozen=True)
class ChainSpec:
    source: Source
    kind: ChainKind
    modules: tuple[ModuleSpec, ...]
    files: tuple[FileDigest, ...]
    trust_remote_code: bool = False
    allow_pickle: bool = False


def resolve_source(source: str, *, revision: str | None = None) -> Source:
    """A local folder, or a model id already in the local Hugging Face cache (never downloaded)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"{source} is a file; pass the folder that holds modules.json")
        folder = path.resolve()
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
    return Source(kind=SourceKind.HUB, location=source, folder=snapshot, boundary=snapshot.parent.parent.resolve(),
                  revision=snapshot.name)


def read_chain(source: str, *, revision: str | None = None, trust_remote_code: bool = False,
               allow_pickle: bool = False) -> ChainSpec:
    """Read and check a saved chain without importing anything from it."""
    src = resolve_source(source, revision=revision)
    files = _scan_files(src)
    entries = _read_modules_json(src)
    modules = tuple(_module_spec(src, entry, trust_remote_code) for entry in entries)
    if not allow_pickle:
        _refuse_pickle_only(src, modules, files)
    kind = _chain_kind(src, modules)
    return ChainSpec(source=src, kind=kind, modules=modules, files=digest_files(src.folder, files),
                     trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def check_compilable(chain: ChainSpec) -> None:
    """Refuse, before any work, a chain this version cannot compile into one graph; name every
    module that is the reason."""
    first, *rest = chain.modules
    reasons = []
    if chain.kind is not ChainKind.SENTENCE_TRANSFORMER:
        reasons.append(f"chain kind {chain.kind.value} is not compiled yet (supported: SentenceTransformer)")
    if first.kind is not ModuleKind.TRANSFORMER or first.config.get("transformer_task", "feature-extraction") != "feature-extraction":
        reasons.append(f"module {first.name!r} ({first.type}) must be a feature-extraction Transformer")
    if not rest or rest[0].kind is not ModuleKind.POOLING:
        reasons.append("a Pooling module must follow the Transformer (it makes the sentence embedding)")
    for module in rest:
        if module.kind not in _COMPILABLE_AFTER_TRANSFORMER:
            reasons.append(f"module {module.name!r} ({module.type}, {module.kind.value}) is not compiled yet")
        elif module.kind is ModuleKind.POOLING and module.config.get("include_prompt") is False:
            reasons.append(f"module {module.name!r}: Pooling with include_prompt=false is not compiled yet")
    if reasons:
        supported = ", ".join(k.value for k in sorted(_COMPILABLE_AFTER_TRANSFORMER, key=lambda k: k.value))
        raise UnsupportedModuleError(
            "this chain cannot be compiled:\n  " + "\n  ".join(reasons)
            + f"\nSupported chains: a feature-extraction Transformer, a Pooling, then any of {supported}."
        )


def _scan_files(src: Source) -> list[str]:
    """Every file of the folder as '/'-separated paths; refuse links that leave the boundary."""
    boundary = src.boundary
    found = []
    for dirpath, dirnames, filenames in os.walk(src.folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.resolve().is_relative_to(boundary):
                raise UnsafeSourceError(f"{path} links outside {boundary}; refusing to read it")
            if path.is_file():
                found.append(path.relative_to(src.folder).as_posix())
        for name in dirnames:
            if not (Path(dirpath) / name).resolve().is_relative_to(boundary):
                raise UnsafeSourceError(f"{Path(dirpath) / name} links outside {boundary}; refusing to read it")
    return sorted(found)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path.parent}: no {path.name}; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: not valid JSON ({e})") from None


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
    pure = PurePosixPath(rel)
    if "\\" in rel or pure.is_absolute() or ".." in pure.parts:
        raise UnsafeSourceError(f"module path {rel!r} in modules.json leaves the model folder; refusing it")
    path = src.folder / rel
    if not path.resolve().is_relative_to(src.folder.resolve()):
        raise UnsafeSourceError(f"module path {rel!r} resolves outside the model folder (a symlink?); refusing it")
    return path


def _module_spec(src: Source, entry: dict[str, Any], trust_remote_code: bool) -> ModuleSpec:
    directory = _module_dir(src, entry["path"])
    kind = MODULE_TYPES.get(entry["type"])
    if kind is None:
        if not trust_remote_code:
            known = sorted({k.value for k in MODULE_TYPES.values()})
            raise UnsupportedModuleError(
                f"module {entry['name']!r} has type {entry['type']!r}, which is not one of sentence-transformers' "
                f"own modules; supported: {', '.join(known)}. Pass --trust-remote-code to import it (this runs "
                "code from the model folder)."
            )
        kind = ModuleKind.CUSTOM
    names = _TRANSFORMER_CONFIGS if kind in (ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER) else ("config.json",)
    config: dict[str, Any] = {}
    for name in names:
        if (directory / name).is_file():
            config = _read_json(directory / name, "")
            break
    if not isinstance(config, dict):
        raise SourceError(f"{directory}: module config must be a JSON object")
    return ModuleSpec(idx=entry["idx"], name=entry["name"], path=entry["path"], type=entry["type"], kind=kind,
                      config=config)


def _refuse_pickle_only(src: Source, modules: tuple[ModuleSpec, ...], files: list[str]) -> None:
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


def _chain_kind(src: Source, modules: tuple[ModuleSpec, ...]) -> ChainKind:
    config_path = src.folder / "config_sentence_transformers.json"
    model_type = None
    if config_path.is_file():
        config = _read_json(config_path, "")
        model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:
        kinds = {m.kind for m in modules}
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
    try:
        model = model_class(str(chain.source.folder), device="cpu", local_files_only=True,
                            trust_remote_code=chain.trust_remote_code, model_kwargs=model_kwargs)
    except Exception as e:
        raise SourceError(f"sentence-transformers could not load {chain.source.location}: {type(e).__name__}: {e}") from e
    return model.eval()


def resolve_tokenizer(transformer: Any) -> tuple[TokenizerSpec, str]:
    """The tokenizer exactly as the reference calls it: its backend tokenizer (with any
    do_lower_case normalizer sentence-transformers added) and the call-time settings
    (max_seq_length, not model_max_length from the file; sides; pad token)."""
    tokenizer = getattr(transformer, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedModuleError(
            f"the Transformer's tokenizer ({type(tokenizer).__name__}) has no fast (tokenizers) backend; "
            "the runtime needs tokenizer.json"
        )
    overrides = {k: v for k, v in (getattr(transformer, "processing_kwargs", None) or {}).items() if v}
    if overrides:
        raise UnsupportedModuleError(
            f"the Transformer sets processing_kwargs {sorted(overrides)}; call-time tokenizer overrides are not compiled yet"
        )
    if not isinstance(transformer.max_seq_length, int):
        raise UnsupportedModuleError("the Transformer has no max_seq_length; set one in sentence_bert_config.json")
    spec = TokenizerSpec(
        file=TOKENIZER_FILE,
        max_length=transformer.max_seq_length,
        truncation_side=Side(tokenizer.truncation_side),
        padding_side=Side(tokenizer.padding_side),
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        pad_token=str(tokenizer.pad_token or ""),
        lowercase=_lowercases(backend.normalizer),
    )
    return spec, _without_call_settings(backend)


def _without_call_settings(backend: Any) -> str:
    """tokenizer.json without truncation/padding sections: transformers sets those per call, so
    the saved ones are stale; the runtime applies the manifest's instead."""
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(backend.to_str())
    clean.no_truncation()
    clean.no_padding()
    return clean.to_str()


def _lowercases(normalizer: Any) -> bool:
    from tokenizers import normalizers

    if isinstance(normalizer, normalizers.Sequence):
        return any(_lowercases(n) for n in normalizer)
    return isinstance(normalizer, normalizers.Lowercase) or bool(getattr(normalizer, "lowercase", False))
