"""The allow-list: sentence-transformers' own module classes, by every ``type`` string its
versions (v2 to v6) write into modules.json and router_config.json, mapped to our ``ModuleKind``.

Nothing outside this table is imported unless the user passes --trust-remote-code.
"""

from __future__ import annotations

from packager.runtime.enums import ModuleKind


def _type_paths(kind: ModuleKind, class_name: str, *modules: str) -> dict[str, ModuleKind]:
    """All spellings of one class: ``package.Class`` for each (re-)exporting package and
    ``package.file.Class`` for its defining file, each under ``sentence_transformers.``."""
    return {f"sentence_transformers.{module}.{class_name}": kind for module in modules}


# Old saves name the re-exporting package (`sentence_transformers.models.Pooling`); v5.4+ name the
# defining file (`sentence_transformers.sentence_transformer.modules.pooling.Pooling`).
MODULE_TYPES: dict[str, ModuleKind] = {
    **_type_paths(ModuleKind.TRANSFORMER, "Transformer", "models", "base.modules", "base.modules.transformer",
                  "sentence_transformer.modules", "cross_encoder.modules", "sparse_encoder.modules",
                  "sparse_encoder.models"),
    # The legacy CLIP module: a Transformer with CLIP's text and image modalities (LEGACY_CLIP_MODALITIES).
    **_type_paths(ModuleKind.TRANSFORMER, "CLIPModel", "models", "sentence_transformer.modules",
                  "sentence_transformer.modules.clip_model"),
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
    **_type_paths(ModuleKind.MULTI_VECTOR_MASK, "MultiVectorMask", "multi_vector_encoder.modules",
                  "multi_vector_encoder.modules.multi_vector_mask"),
    **_type_paths(ModuleKind.ROUTER, "Router", "models", "base.modules", "base.modules.router",
                  "sentence_transformer.modules", "cross_encoder.modules", "sparse_encoder.modules"),
    **_type_paths(ModuleKind.ROUTER, "Asym", "models", "base.modules.router", "sentence_transformer.modules"),
    **_type_paths(ModuleKind.DROPOUT, "Dropout", "models", "sentence_transformer.modules",
                  "sentence_transformer.modules.dropout"),
    **_type_paths(ModuleKind.STATIC_EMBEDDING, "StaticEmbedding", "models", "sentence_transformer.modules",
                  "sentence_transformer.modules.static_embedding"),
    # The legacy modules (sentence-transformers v1 and v2 models: GloVe averages, bags of words).
    **{path: kind for kind, file in (
        (ModuleKind.WORD_EMBEDDINGS, "word_embeddings"), (ModuleKind.WORD_WEIGHTS, "word_weights"),
        (ModuleKind.BOW, "bow"), (ModuleKind.WEIGHTED_LAYER_POOLING, "weighted_layer_pooling"), (ModuleKind.CNN, "cnn"),
        (ModuleKind.LSTM, "lstm"),
    ) for path in _type_paths(kind, kind.value, "models", "sentence_transformer.modules",
                              f"sentence_transformer.modules.{file}")},
    # Known, safe to read, refused with their own name (and why) rather than as foreign code.
    **_type_paths(ModuleKind.NOT_COMPILED, "HierarchicalTokenPooling", "multi_vector_encoder.modules",
                  "multi_vector_encoder.modules.token_pooling"),
}

# The word tokenizers a WordEmbeddings may name in its tokenizer_class (a class path sentence-transformers
# imports): WhitespaceTokenizer, which the runtime repeats (runtime/words.py).
WORD_TOKENIZERS = frozenset(f"sentence_transformers.{module}.WhitespaceTokenizer" for module in (
    "models.tokenizer", "models.tokenizer.WhitespaceTokenizer", "sentence_transformer.modules.tokenizer",
    "sentence_transformer.modules.tokenizer.whitespace"))

# What sentence-transformers' CLIPModel runs when its folder saves no modality_config (saves before v5.4).
LEGACY_CLIP_MODALITIES = {
    "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
    "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
}
