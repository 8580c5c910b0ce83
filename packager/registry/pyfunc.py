"""The MLflow pyfunc of a packaged artifact, logged as code ("models from code").

MLflow copies this file into every registered version and runs it in the serving environment,
which has mlflow and the runtime's dependencies only: it imports the artifact's own loader from
the artifact directory, never ``packager``.

Before anything from the artifact is imported, ``check_before_import`` compares the manifest
with the sha256 pinned when the version was registered (``model_config["manifest_sha256"]``,
which a caller may override with the registry tag's value), refuses links, special files and any
file the manifest does not list, and checks the loader's own files against their digests; the
loader then verifies every other file. This file itself and the MLmodel that names it live in the
same artifact store: whoever can write there can change them too (see the README's "Safety").

Inputs are checked here as sentence-transformers would take them: strings (and for
cross-encoders, pairs of strings), never numbers, nulls or nested lists. A CLIP-style artifact
also takes images: a frame (or a dict of columns) with ``text`` and ``image`` columns, each row
filling one of them, images as encoded file bytes or their base64 (from JSON); strings are
always texts, never paths or URLs the server would read. The signature declares
no input schema on purpose: MLflow converts a request's values to a declared string column's
type (``1`` -> ``"1"``, ``null`` -> ``"None"``) and drops undeclared columns before ``predict``
could see them.
"""

import base64
import hashlib
import importlib.util
import inspect
import json
import os
import stat
import sys
import tempfile
import threading
import types
import uuid
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

MANIFEST = "manifest.json"
MANIFEST_LIMIT = 16 << 20
ENCODE_VERBS = ("encode", "encode_query", "encode_document")


class RefusedArtifactError(Exception):
    """The artifact does not match what was registered; nothing of it was imported."""


def check_before_import(root: Path, manifest_sha256):
    """Refuse the artifact unless its manifest is the registered one (when pinned), it holds
    exactly the files its manifest lists (regular files only), and its loader's files match."""
    listed = _listed_files(root, manifest_sha256)
    present = _regular_files(root)
    extra, missing = present - set(listed) - {MANIFEST}, set(listed) - present
    if extra or missing:
        raise RefusedArtifactError(f"files not in the manifest: {sorted(extra)[:5]}; missing: {sorted(missing)[:5]}")
    for rel, entry in listed.items():
        if rel.startswith("loader/") and _sha256(root / rel) != entry.get("sha256"):
            raise RefusedArtifactError(f"{rel}: sha256 does not match the manifest")


def _listed_files(root: Path, manifest_sha256) -> dict:
    """The manifest's file entries by path, once the manifest (a regular file, not a link) has
    matched the pinned sha256."""
    manifest_path = root / MANIFEST
    try:
        fd = os.open(manifest_path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise RefusedArtifactError(f"{manifest_path}: cannot be opened ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise RefusedArtifactError(f"{manifest_path}: not a regular file")
        raw = f.read(MANIFEST_LIMIT + 1)
    if manifest_sha256 and hashlib.sha256(raw).hexdigest() != manifest_sha256:
        raise RefusedArtifactError(f"{MANIFEST} differs from the one registered (sha256 {manifest_sha256[:16]}...)")
    try:
        return {entry["path"]: entry for entry in json.loads(raw)["files"]}
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise RefusedArtifactError(f"{MANIFEST} is not a packaged artifact's manifest ({type(e).__name__})") from None


def _regular_files(root: Path) -> set:
    """The artifact's files, relative to ``root``; a link or special file anywhere is refused."""
    present = set()
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise RefusedArtifactError(f"{path.relative_to(root)}: a link or special file")
            if stat.S_ISREG(mode):
                present.add(path.relative_to(root).as_posix())
    return present


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def import_loader(artifact: Path):
    """The artifact's ``loader`` package, imported by path under a unique name so two artifacts
    can be loaded side by side in one process; bytecode is neither read from nor written to the
    artifact."""
    package = artifact / "loader"
    spec = importlib.util.spec_from_file_location(
        f"packager_loader_{uuid.uuid4().hex}", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"{package}: not an importable package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = sys.pycache_prefix, sys.dont_write_bytecode
    with tempfile.TemporaryDirectory(prefix="packager-pycache-") as cache:
        sys.pycache_prefix, sys.dont_write_bytecode = cache, True
        try:
            spec.loader.exec_module(module)
        finally:
            sys.pycache_prefix, sys.dont_write_bytecode = saved
    return module


# Models this process loaded, by artifact directory, pinned manifest, threads, the manifest's
# own sha256 and every file's size, inode and modification and change times: Spark's local mode
# calls mlflow.pyfunc.load_model on the same directory for every task, and each load would check
# every file and build a new session. Kept on a module of its own because MLflow runs this file
# anew, under a new name, on every load; the oldest goes when LOADED_LIMIT are held.
_SHARED = sys.modules.setdefault("packager_pyfunc_loaded", types.ModuleType("packager_pyfunc_loaded")).__dict__
_LOADED: dict = _SHARED.setdefault("models", {})
_LOADED_LOCK = _SHARED.setdefault("lock", threading.Lock())
LOADED_LIMIT = 4


def _manifest_sha256(root: Path):
    """The manifest's sha256 if it is a regular file of a manifest's size; None otherwise
    (check_before_import then says what is wrong)."""
    try:
        st = (root / MANIFEST).lstat()
        return _sha256(root / MANIFEST) if stat.S_ISREG(st.st_mode) and st.st_size <= MANIFEST_LIMIT else None
    except OSError:
        return None


def _file_stats(root: Path) -> tuple:
    """Each file's size, inode and times; the change time (ctime) is one no process can set back."""
    return tuple(sorted((str(path), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                        for path in root.rglob("*") if (st := path.lstat()) and not stat.S_ISDIR(st.st_mode)))


def _spark_task_cpus():
    """In a Spark task, the cores it was given (``spark.task.cpus``, 1 by default): every task
    slot runs its own Python worker, so a session using all the machine's cores in each would
    oversubscribe them. None elsewhere: the engine's own default."""
    if "pyspark" not in sys.modules:
        return None
    from pyspark import TaskContext

    task = TaskContext.get()
    return task.cpus() if task is not None else None


def _refuse(message: str) -> MlflowException:
    """An input error: MLflow's scoring server answers it with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _strings(values, what: str) -> list:
    bad = next(((i, v) for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise _refuse(f"{what} must be strings; item {bad[0]} is {type(bad[1]).__name__} {str(bad[1])[:40]!r}")
    return list(values)


def _rows(model_input) -> list:
    """The items of a request that is not a frame: a string, a list, or a numpy array (MLflow
    parses {"inputs": ...} into one)."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "tolist"):
        rows = model_input.tolist()
        return rows if isinstance(rows, list) else [rows]
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    raise _refuse(f"expected a list, got {type(model_input).__name__}")


def texts_of(model_input) -> list:
    """The texts of a request: a string, a list of strings, or a frame of one column."""
    if hasattr(model_input, "columns"):
        if len(model_input.columns) != 1:
            raise _refuse(f"this model embeds one column of texts; got columns {list(model_input.columns)}")
        return _strings(model_input.iloc[:, 0].tolist(), "texts")
    return _strings(_rows(model_input), "texts")


def _frame(model_input):
    """``{"inputs": {"column": [...]}}`` as a frame, as MLflow passes dicts of columns."""
    import pandas as pd

    try:
        return pd.DataFrame({k: list(v) if hasattr(v, "__len__") and not isinstance(v, (str, bytes)) else [v]
                             for k, v in model_input.items()})
    except ValueError as e:
        raise _refuse(f"the columns must be lists of the same length ({e})") from None


def items_of(model_input) -> list:
    """The texts and images of a request to a model that embeds both, in row order: a frame (or
    a dict) of ``text`` and ``image`` columns, one of them filled per row, images as bytes or
    base64; or texts alone as ``texts_of`` takes them."""
    if isinstance(model_input, dict):
        model_input = _frame(model_input)
    if not hasattr(model_input, "columns") or "image" not in model_input.columns:
        return texts_of(model_input)
    columns = set(model_input.columns)
    if not columns <= {"text", "image"}:
        raise _refuse(f"this model embeds a text column and an image column; got columns {sorted(columns)}")
    items = []
    for i, row in enumerate(model_input.to_dict("records")):
        text, image = row.get("text"), row.get("image")
        filled = [v for v in (text, image) if v is not None and not (isinstance(v, float) and v != v)]  # NaN: empty
        if len(filled) != 1:
            raise _refuse(f"row {i} must have a text or an image, not {'both' if filled else 'neither'}")
        if filled[0] is text:
            items.append(_strings([text], f"row {i}'s text")[0])
        else:
            items.append(_image_bytes(image, i))
    return items


def _image_bytes(value, row: int) -> bytes:
    """An image as encoded file bytes: given as bytes, or as base64 (optionally a data URI)."""
    import base64
    import binascii

    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise _refuse(f"row {row}'s image must be bytes or a base64 string, got {type(value).__name__}")
    payload = value.partition(",")[2] if value.startswith("data:") else value
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(f"row {row}'s image is not valid base64") from None


def pairs_of(model_input) -> list:
    """(query, document) pairs: a frame (or a dict) of query and document columns (or exactly
    two), or a list of [query, document] lists."""
    if isinstance(model_input, dict):  # {"inputs": {"query": [...], "document": [...]}}
        model_input = _frame(model_input)
    if hasattr(model_input, "columns"):
        columns = list(model_input.columns)
        if set(columns) >= {"query", "document"} and len(columns) == 2:
            model_input = model_input[["query", "document"]]
        elif len(columns) != 2:
            raise _refuse(f"a cross-encoder takes query and document columns; got {columns}")
        rows = model_input.values.tolist()
    else:
        rows = _rows(model_input)
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise _refuse(f"pair {i} must be [query, document]; got {str(row)[:60]}")
        _strings(row, f"pair {i}")
    return [tuple(row) for row in rows]


def _call(verb, inputs, params: dict):
    """``verb(inputs, **params)``, an option the verb does not take being a bad request."""
    try:
        inspect.signature(verb).bind(inputs, **params)
    except TypeError:
        raise _refuse(f"unknown option(s) {sorted(params)} for {verb.__name__}()") from None
    return verb(inputs, **params)


def _dimensions_as_truncate_dim(params: dict, manifest) -> None:
    """OpenAI's ``dimensions`` (what MLflow's gateway passes on from an embeddings request):
    the first N dimensions, as sentence-transformers' ``truncate_dim`` keeps them, and unit
    vectors again where the chain's own are (OpenAI's shortened embeddings are). N past the
    model's width is refused, not ignored."""
    if "dimensions" not in params:
        return
    dimensions = params.pop("dimensions")
    if params.setdefault("truncate_dim", dimensions) != dimensions:
        raise _refuse(f"dimensions={dimensions} and truncate_dim={params['truncate_dim']} disagree; give one")
    width = manifest.embedding_dimension
    if isinstance(dimensions, int) and width and dimensions > width:
        raise _refuse(f"dimensions={dimensions}: this model's embeddings have {width}")
    if any(module.kind.value == "Normalize" for module in manifest.modules):
        params.setdefault("normalize_embeddings", True)


class ArtifactModel(PythonModel):
    # The explicit signature logged with the model is the contract; without this MLflow would
    # wrap predict() and warn (in every process that loads it) that it has no type hints.
    _skip_type_hint_validation = True

    def load_context(self, context):
        root = Path(context.artifacts["artifact"]).resolve()
        config = context.model_config or {}
        pinned, threads = config.get("manifest_sha256"), config.get("threads") or _spark_task_cpus()
        # an OpenVINO int8 artifact built on a VNNI host, in float on every executor: one text, one
        # vector, on a cluster of CPUs with and without VNNI (only passed when asked: older loaders lack it)
        options = {"float_products": True} if config.get("float_products") else {}
        key = (str(root), pinned, threads, bool(options), _manifest_sha256(root), _file_stats(root))
        with _LOADED_LOCK:
            loaded = _LOADED.get(key)
            if loaded is None:
                try:
                    check_before_import(root, pinned)
                except RefusedArtifactError as e:
                    raise MlflowException(f"refusing the packaged artifact at {root}: {e}") from None
                loader = import_loader(root)
                loaded = (loader.InvalidInputError, loader.load(root, threads=threads, **options))
                while len(_LOADED) >= LOADED_LIMIT:
                    _LOADED.pop(next(iter(_LOADED)))
                _LOADED[key] = loaded
        self._invalid_input, self.model = loaded

    def predict(self, context, model_input, params=None):
        """Texts in, embeddings out (sparse ones as ``indices`` and ``values`` columns; for a
        multi-vector encoder, one list of token vectors per text), by the verb in ``params``
        (encode, encode_query or encode_document) with its options (``precision``,
        ``batch_size``...), and texts and images (``items_of``) for a CLIP-style model; for
        cross-encoders, (query, document) pairs in (two columns, or a list of pairs), scores out."""
        # MLflow fills every declared parameter in, None where the verb keeps its own default.
        params = {name: value for name, value in (params or {}).items() if value is not None}
        kind = self.model.manifest.chain_kind.value
        try:
            if kind == "CrossEncoder":
                params.pop("verb", None)
                return _call(self.model.predict, pairs_of(model_input), params)
            verb = params.pop("verb", "encode")
            _dimensions_as_truncate_dim(params, self.model.manifest)
            if verb not in ENCODE_VERBS:
                raise _refuse(f"verb {verb!r}: use one of {', '.join(ENCODE_VERBS)}")
            if self.model.manifest.takes_images:  # texts and images; a caller's string is a text, never a path
                params = {**params, "image_strings": False}
                items = items_of(model_input)
                if any(route.vision for route in self.model.manifest.routes):  # images as message parts take a URI
                    items = [{"image": "data:image/*;base64," + base64.b64encode(item).decode()}
                             if isinstance(item, bytes) else item for item in items]
                embeddings = _call(getattr(self.model, verb), items, params)
            else:
                embeddings = _call(getattr(self.model, verb), texts_of(model_input), params)
        except self._invalid_input as e:  # the loader's own input errors: a bad request, not a failure
            raise _refuse(str(e)) from None
        if kind == "MultiVectorEncoder":  # ragged: [tokens, dim] per text
            return [matrix.tolist() for matrix in embeddings]
        if kind == "SparseEncoder":  # each text's active dimensions and their weights, as vector stores take them
            import pandas as pd

            return pd.DataFrame({"indices": [e.indices.tolist() for e in embeddings],
                                 "values": [e.values.tolist() for e in embeddings]}, columns=["indices", "values"])
        return embeddings


mlflow.models.set_model(ArtifactModel())
