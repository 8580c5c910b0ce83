"""What a registered version declares about its inputs and outputs: the MLflow signature (outputs
and the parameters a request may set, per chain kind) and the input example logged with it."""

from __future__ import annotations

from typing import Any

from packager.runtime.enums import ChainKind
from packager.runtime.manifest import Manifest


def signature(manifest: Manifest) -> Any:
    """Strings in, float32 rows out (int8/uint8 rows for the int8, uint8, binary and ubinary
    output precisions, ``ceil(dim / 8)`` wide for the last two: MLflow does not check outputs
    against the signature), with the verb (encode, encode_query, encode_document) and the verb's
    options as parameters; for sparse encoders ``indices`` and ``values`` per text; for
    multi-vector encoders one list of token vectors per text (in the precision asked for too); for
    cross-encoders, (query, document) string columns in, scores out. MLflow passes a request only
    the parameters declared here (each one, its default where the request has none) and drops,
    with a warning, any other."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import DataType, ParamSchema, ParamSpec, Schema, TensorSpec
    from mlflow.types.schema import Array, ColSpec

    def params(*names: str) -> ParamSchema:
        return ParamSchema([ParamSpec(name, DataType[PARAMS[name][0]], PARAMS[name][1]) for name in names])

    # No input schema: MLflow would convert a request's numbers and nulls to a declared string
    # column's type, and drop undeclared columns, before the pyfunc could refuse them; the pyfunc
    # checks its inputs itself, and the input example shows their shape.
    if manifest.scoring is not None:  # a cross-encoder
        labels = manifest.scoring.num_labels
        shape = (-1,) if labels == 1 else (-1, labels)
        return ModelSignature(inputs=None, outputs=Schema([TensorSpec(np.dtype(np.float32), shape)]),
                              params=params("batch_size", "apply_softmax", "prompt_name", "prompt"))
    encoding = ("verb", "batch_size", "prompt_name", "prompt")
    if manifest.chain_kind is ChainKind.MULTI_VECTOR_ENCODER:  # per text, its kept tokens' vectors
        return ModelSignature(inputs=None, outputs=Schema([ColSpec(Array(Array(DataType.float)))]),
                              params=params(*encoding, "normalize_embeddings", "precision"))
    if manifest.chain_kind is ChainKind.SPARSE_ENCODER:  # per text, its active dimensions and their weights
        return ModelSignature(inputs=None, outputs=Schema([ColSpec(Array(DataType.long), "indices"),
                                                          ColSpec(Array(DataType.float), "values")]),
                              params=params(*encoding, "max_active_dims"))
    return ModelSignature(inputs=None,
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, manifest.embedding_dimension or -1))]),
                          params=params(*encoding, "normalize_embeddings", "truncate_dim", "dimensions", "precision"))


# The parameters a request may set, as (MLflow data type, default): the loader's verb options of
# the same names. None (MLflow passes every declared parameter, None where a request has none)
# leaves the verb's own default, so a version whose artifact has an older loader is asked only
# for what the request sets.
PARAMS: dict[str, tuple[str, Any]] = {
    "verb": ("string", "encode"), "batch_size": ("long", None), "prompt_name": ("string", None),
    "prompt": ("string", None), "normalize_embeddings": ("boolean", None), "truncate_dim": ("long", None),
    "precision": ("string", None), "max_active_dims": ("long", None), "apply_softmax": ("boolean", None),
    # OpenAI's shortened embeddings: MLflow's gateway passes an embeddings request's fields on as
    # parameters, so a client's dimensions=N reaches the embedder (the pyfunc maps it to truncate_dim,
    # renormalized where the chain normalizes).
    "dimensions": ("long", None),
}


def input_example(manifest: Manifest) -> Any:
    """What a request looks like, logged with the version (MLflow writes it out as
    ``serving_input_example.json``): pairs for a cross-encoder, a text and an image column for a
    CLIP-style model, texts otherwise, with the verb that differs from plain ``encode``."""
    if manifest.chain_kind is ChainKind.CROSS_ENCODER:
        import pandas as pd

        return pd.DataFrame({"query": ["What is a packaged model?"], "document": ["A model with its own loader."]})
    verb = "encode_query" if manifest.verbs.get("encode_query") != manifest.verbs.get("encode_document") else "encode"
    if manifest.takes_images:  # texts and images, one per row
        import pandas as pd

        return pd.DataFrame({"text": ["a photo of an orange square", None],
                             "image": [None, _EXAMPLE_IMAGE_BASE64]}), {"verb": verb}
    return ["An example sentence to embed."], {"verb": verb}


# An 8x8 orange PNG, base64-encoded: how a JSON request sends an image.
_EXAMPLE_IMAGE_BASE64 = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAE0lEQVR4nGP838OAFTBhFx6sEgA5mAGbBP"
                         "y2ewAAAABJRU5ErkJggg==")
