"""The closed sets a manifest's fields take: what a chain is, how it was exported, what its
routes and outputs mean, and where its parity stands.

Keyed by value in the manifest's JSON (``ChainKind("CrossEncoder")``); compared by value where
a caller may hold another copy of this module (an artifact's own loader).
"""

from __future__ import annotations

from enum import Enum


class ChainKind(str, Enum):
    SENTENCE_TRANSFORMER = "SentenceTransformer"
    CROSS_ENCODER = "CrossEncoder"
    SPARSE_ENCODER = "SparseEncoder"
    MULTI_VECTOR_ENCODER = "MultiVectorEncoder"


class ModuleKind(str, Enum):
    """sentence-transformers' own module classes, as the build side classifies them."""

    TRANSFORMER = "Transformer"
    POOLING = "Pooling"
    DENSE = "Dense"
    NORMALIZE = "Normalize"
    LAYER_NORM = "LayerNorm"
    LOGIT_SCORE = "LogitScore"
    MLM_TRANSFORMER = "MLMTransformer"
    SPLADE_POOLING = "SpladePooling"
    SPARSE_STATIC_EMBEDDING = "SparseStaticEmbedding"
    SPARSE_AUTO_ENCODER = "SparseAutoEncoder"
    STATIC_EMBEDDING = "StaticEmbedding"
    MULTI_VECTOR_MASK = "MultiVectorMask"
    ROUTER = "Router"
    DROPOUT = "Dropout"  # the identity at inference
    WORD_EMBEDDINGS = "WordEmbeddings"  # the legacy word-vector input module (GloVe), WhitespaceTokenizer
    WORD_WEIGHTS = "WordWeights"
    BOW = "BoW"  # a bag-of-words input module, its vector made in preprocess
    WEIGHTED_LAYER_POOLING = "WeightedLayerPooling"
    CNN = "CNN"  # convolutions over the token embeddings
    LSTM = "LSTM"  # an LSTM over each text's word embeddings
    NOT_COMPILED = "not compiled"  # sentence-transformers' own, safe to read, but no graph is made of it
    CUSTOM = "custom"  # only with --trust-remote-code


class SourceKind(str, Enum):
    PATH = "path"
    HUB = "hub"  # a model id resolved from the local Hugging Face cache


class Format(str, Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"  # OpenVINO on CPUs with bf16 arithmetic (AVX512_BF16, AMX): f32 weights, bf16 products
    INT8 = "int8"


class Int8Arithmetic(str, Enum):
    """How an int8 artifact's products come out the same on every CPU (or, for
    VNNI_OR_FLOAT_PRODUCTS, the two ways they come out, both gated).

    x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8
    weights with ``vpmaddubsw``, which adds each two adjacent products into an int16 with
    saturation; VNNI and AMX add them exactly in int32. With full-range weights (|w| <= 127)
    one model gives different outputs on the two (measured: a gate's min cosine 0.9996 on one,
    0.92 on the other), so a verdict taken on the build host would not hold on the servers."""

    # Every int8 weight an integer product reads is within SATURATION_FREE_WEIGHT_LIMIT (7-bit
    # weights, onnxruntime's reduce_range, NNCF's overflow fix on every layer): every kernel
    # computes the same integers.
    SATURATION_FREE = "saturation-free"
    # The int8 weights are dequantized to float before any product (weight-only compression,
    # int8 embedding tables): there is no integer product.
    FLOAT_PRODUCTS = "float-products"
    # OpenVINO int8 weights: on CPUs with VNNI or AMX its CPU plugin quantizes each MatMul's
    # activations to int8 in groups of 32 channels and sums the products exactly in int32 (the same
    # integers on every such CPU); on the others it multiplies in float. The gate measured both
    # (built on a VNNI host); the loader's ``float_products=True`` runs the second everywhere.
    VNNI_OR_FLOAT_PRODUCTS = "vnni-or-float-products"


class Modality(str, Enum):
    TEXT = "text"
    IMAGE = "image"


class VisionFamily(str, Enum):
    """The vision-language model families whose message routes the runtime runs (transformers'
    model types): the vision tower's positions differ by family."""

    QWEN2_VL = "qwen2_vl"
    QWEN2_5_VL = "qwen2_5_vl"
    QWEN3_VL = "qwen3_vl"


class MessageFormat(str, Enum):
    """How a chat message's content is written: a string, or a list of typed parts."""

    FLAT = "flat"
    STRUCTURED = "structured"


class Side(str, Enum):
    LEFT = "left"
    RIGHT = "right"


class ExpansionStrategy(str, Enum):
    FIXED = "fixed"  # every query padded (or cut) to exactly ``length`` tokens
    MIN = "min"  # queries shorter than ``length`` padded up to it


class OutputMeaning(str, Enum):
    SENTENCE_EMBEDDING = "sentence_embedding"  # dense [batch, dim]
    TOKEN_EMBEDDINGS = "token_embeddings"  # dense [batch, sequence, hidden]
    SPARSE_EMBEDDING = "sparse_embedding"  # [batch, dim], mostly zeros; the loader returns indices and values
    SCORES = "scores"  # cross-encoder logits [batch, num_labels], before the activation
    SCORING_MASK = "scoring_mask"  # [batch, sequence]: the tokens a multi-vector encoder keeps for one task


class Similarity(str, Enum):
    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"
    MAXSIM = "maxsim"  # late interaction: per query token the best document token, summed
    MEAN_MAXSIM = "meanmaxsim"  # MaxSim divided by the query's token count


class Activation(str, Enum):
    """The activation a CrossEncoder applies to its logits in predict()."""

    IDENTITY = "identity"
    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    TANH = "tanh"


class ParityStatus(str, Enum):
    PENDING = "pending"  # only while the artifact is staged and its gate is running
    PASSED = "passed"
    FAILED_ALLOWED = "failed-allowed"  # the gate failed and the user published it anyway
