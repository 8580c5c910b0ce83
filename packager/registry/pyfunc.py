"""The MLflow pyfunc of a packaged artifact, logged as code ("models from code").

MLflow copies this file into every registered version and runs it in the serving environment,
which has mlflow and the runtime's dependencies only: it imports the artifact's own loader from
the artifact directory, never ``packager``.
"""

import importlib.util
import sys
import tempfile
import uuid
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


def import_loader(artifact: Path):
    """The artifact's ``loader`` package, imported by path under a unique name so two artifacts
    can be loaded side by side in one process; bytecode caches inside the artifact are ignored."""
    package = artifact / "loader"
    spec = importlib.util.spec_from_file_location(
        f"packager_loader_{uuid.uuid4().hex}", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = sys.pycache_prefix
    with tempfile.TemporaryDirectory(prefix="packager-pycache-") as cache:
        sys.pycache_prefix = cache
        try:
            spec.loader.exec_module(module)
        finally:
            sys.pycache_prefix = saved
    return module


class ArtifactModel(PythonModel):
    # The explicit signature logged with the model is the contract; without this MLflow would
    # wrap predict() and warn (in every process that loads it) that it has no type hints.
    _skip_type_hint_validation = True

    def load_context(self, context):
        root = Path(context.artifacts["artifact"])
        self.model = import_loader(root).load(root)

    def predict(self, context, model_input, params=None):
        """Texts in, embeddings out (sparse ones as dense rows), by the verb in ``params``
        (encode, encode_query or encode_document); for cross-encoders, (query, document) pairs in
        (two columns, or a list of pairs), scores out."""
        params = dict(params or {})
        kind = self.model.manifest.chain_kind.value
        if kind == "CrossEncoder":
            pairs = model_input.values.tolist() if hasattr(model_input, "columns") else list(model_input)
            return self.model.predict([tuple(p) for p in pairs], **params)
        verb = params.pop("verb", "encode")
        if verb not in ("encode", "encode_query", "encode_document"):
            raise ValueError(f"verb {verb!r}: use encode, encode_query or encode_document")
        if hasattr(model_input, "columns"):  # a pandas DataFrame: the "text" column, or the only one
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[column].tolist()
        elif isinstance(model_input, str):
            texts = [model_input]
        else:
            texts = list(model_input)
        embeddings = getattr(self.model, verb)(texts, **params)
        return embeddings.toarray() if kind == "SparseEncoder" else embeddings


mlflow.models.set_model(ArtifactModel())
