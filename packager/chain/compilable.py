"""What this version compiles: each route starts with an input module its chain kind takes (a
text or chat-message Transformer of a task the kind takes, a CLIP-style text+image Transformer in a
SentenceTransformer (a route per modality), a Qwen-VL Transformer whose chat messages carry images
in a SentenceTransformer, a StaticEmbedding or a legacy WordEmbeddings or BoW in a
SentenceTransformer, a SparseStaticEmbedding in a SparseEncoder) and continues with modules that
may follow it (a MultiVectorEncoder's MultiVectorMask last); a Router may stand anywhere, its routes
taking its place. Everything else is refused before any work, naming the module that is the reason."""

from __future__ import annotations

from packager.chain.allow_list import WORD_TOKENIZERS
from packager.chain.architectures import backbones
from packager.chain.chat_template import takes_messages
from packager.chain.processing import processing_problems
from packager.chain.spec import IMAGE_AND_TEXT, ChainSpec, ModuleSpec
from packager.chain.vision_graph import vision_family
from packager.errors import UnsupportedModuleError
from packager.runtime.enums import ChainKind, ModuleKind

# What each chain kind's pipelines may start with: Transformer tasks, and modules that tokenize.
_INPUT_TASKS = {
    ChainKind.SENTENCE_TRANSFORMER: ("feature-extraction",),
    ChainKind.CROSS_ENCODER: ("sequence-classification", "text-generation", "feature-extraction"),
    ChainKind.SPARSE_ENCODER: ("fill-mask", "feature-extraction"),
    ChainKind.MULTI_VECTOR_ENCODER: ("feature-extraction",),
}
_INPUT_MODULES = {
    ChainKind.SENTENCE_TRANSFORMER: (ModuleKind.STATIC_EMBEDDING, ModuleKind.WORD_EMBEDDINGS, ModuleKind.BOW),
    ChainKind.CROSS_ENCODER: (),
    ChainKind.SPARSE_ENCODER: (ModuleKind.SPARSE_STATIC_EMBEDDING,),
    ChainKind.MULTI_VECTOR_ENCODER: (),
}
# What may follow the input module.
_AFTER_INPUT = {ModuleKind.POOLING, ModuleKind.DENSE, ModuleKind.LAYER_NORM, ModuleKind.NORMALIZE,
                ModuleKind.DROPOUT, ModuleKind.LOGIT_SCORE, ModuleKind.SPLADE_POOLING, ModuleKind.SPARSE_AUTO_ENCODER,
                ModuleKind.WORD_WEIGHTS, ModuleKind.WEIGHTED_LAYER_POOLING, ModuleKind.CNN, ModuleKind.LSTM,
                ModuleKind.CUSTOM}
# Why some of sentence-transformers' own modules are not compiled, where there is more to say.
_NOT_COMPILED_BECAUSE = {
    "HierarchicalTokenPooling": "it clusters each document's tokens with scipy's Ward linkage, which the runtime "
                                "cannot reproduce exactly in numpy (which tokens merge turns on ties and summation "
                                "order); save the model without it and pool the loader's output where needed",
}
# Why the other tokenizers a WordEmbeddings may name are not repeated.
_OTHER_WORD_TOKENIZERS = {
    "PhraseTokenizer": ": it splits texts with nltk's word_tokenize (Penn Treebank rules and regular expressions), "
                       "which the runtime does not carry",
    "TransformersTokenizerWrapper": ": a transformers tokenizer, whose ids (special tokens included) WordEmbeddings "
                                    "cuts at max_seq_length, dropping the closing special token of a long text, "
                                    "where tokenizers' truncation keeps it",
}
# The modalities a Transformer's texts may reach it in: as text, or rendered as chat messages.
_TEXT_MODALITIES = ({"text"}, {"message"}, {"text", "message"})
_IMAGE_AND_TEXT = set(IMAGE_AND_TEXT)
# What the runtime lacks for the other modalities (the README's "What compiles" says it at length).
_OTHER_MODALITIES = ("audio and video need their own feature extractors in the runtime; an image and a text in "
                     "one input, and multimodal chat messages, need the processor's interleaving of image tokens "
                     "into the text, which the runtime repeats for Qwen2-VL, Qwen2.5-VL and Qwen3-VL models only")


def check_compilable(chain: ChainSpec) -> None:
    """Refuse, before any work, a chain this version cannot compile into one graph per route;
    name every module that is the reason."""
    _check_trusted(chain)
    routers = [m.name for m in chain.modules if m.kind is ModuleKind.ROUTER]
    reasons = [f"the chain has {len(routers)} Routers ({', '.join(routers)}); one is compiled"] \
        if len(routers) > 1 else []
    if routers:
        reasons += [f"module {m.name!r}: a text+image Transformer is compiled without a Router (its modalities "
                    "are its routes), not inside or beside one" for m in chain.all_modules()
                    if m.modalities == _IMAGE_AND_TEXT]
    reasons += _vision_problems(chain)
    pipelines = chain.pipelines()
    for route, modules in pipelines.items():
        prefix = f"route {route!r}: " if len(pipelines) > 1 else ""
        reasons += [prefix + r for r in _pipeline_problems(chain.kind, modules)]
    if reasons:
        tasks = "; ".join(f"{k.value}: {', '.join(t)}" for k, t in _INPUT_TASKS.items())
        raise UnsupportedModuleError(
            "this chain cannot be compiled:\n  " + "\n  ".join(dict.fromkeys(reasons))
            + f"\nA route starts with a text or chat-message Transformer ({tasks}), a CLIP-style text+image "
            "Transformer in a SentenceTransformer, a StaticEmbedding, WordEmbeddings or BoW in a "
            "SentenceTransformer or a SparseStaticEmbedding in a SparseEncoder, followed by any of: "
            f"{', '.join(sorted(k.value for k in _AFTER_INPUT))}; a Router may stand anywhere."
        )


def _check_trusted(chain: ChainSpec) -> None:
    """A backbone whose config maps to code in the folder (``auto_map``) is built only with
    --trust-remote-code: refused here, before its code is imported, rather than by transformers
    once the reference loads."""
    untrusted = [b.module for b in backbones(chain) if b.remote_code] if not chain.trust_remote_code else []
    if untrusted:
        raise UnsupportedModuleError(
            f"module {untrusted[0]!r}: its config.json maps the model to code in the folder (auto_map), which "
            "sentence-transformers runs only with trust_remote_code. Pass --trust-remote-code to build it (this "
            "runs code from the model folder).")


def _pipeline_problems(kind: ChainKind, modules: tuple[ModuleSpec, ...]) -> list[str]:
    first, *rest = modules
    problems = [_not_compiled(m) for m in modules if m.kind is ModuleKind.NOT_COMPILED]
    if first.kind is ModuleKind.NOT_COMPILED:
        return problems
    if first.transformer_task is not None:
        problems += _transformer_problems(kind, first)
    elif first.kind is ModuleKind.WORD_EMBEDDINGS and first.config.get("tokenizer_class") not in WORD_TOKENIZERS:
        named = first.config.get("tokenizer_class")
        why = _OTHER_WORD_TOKENIZERS.get(str(named).rsplit(".", 1)[-1], "")
        problems.append(f"module {first.name!r}: a WordEmbeddings is compiled with sentence-transformers' "
                        f"WhitespaceTokenizer, which the runtime repeats, not {named!r}{why}")
    elif first.kind not in _INPUT_MODULES[kind]:
        problems.append(f"module {first.name!r} ({first.type}) cannot start a {kind.value} route")
    problems += [f"module {m.name!r} ({m.type}, {m.kind.value}) cannot follow the input module"
                 for m in rest if m.kind not in _AFTER_INPUT | {ModuleKind.NOT_COMPILED, ModuleKind.MULTI_VECTOR_MASK}]
    problems += [_cnn_problem(m) for m in rest if m.kind is ModuleKind.CNN and _cnn_problem(m)]
    problems += [f"module {m.name!r}: an LSTM reads the texts' lengths that only a WordEmbeddings computes "
                 f"(sentence_lengths), so it compiles in a route that starts with one, not with {first.kind.value} "
                 f"{first.name!r} (where sentence-transformers itself fails)"
                 for m in rest if m.kind is ModuleKind.LSTM and first.kind is not ModuleKind.WORD_EMBEDDINGS]
    masks = [i for i, m in enumerate(modules) if m.kind is ModuleKind.MULTI_VECTOR_MASK]
    if masks and kind is not ChainKind.MULTI_VECTOR_ENCODER:
        problems.append(f"module {modules[masks[0]].name!r}: a MultiVectorMask belongs to a MultiVectorEncoder, "
                        f"not a {kind.value}")
    elif masks and masks != [len(modules) - 1]:
        problems.append(f"module {modules[masks[0]].name!r}: a MultiVectorMask is compiled as the last module of its "
                        "route (only one, and nothing after it)")
    return problems


def _cnn_problem(module: ModuleSpec) -> str:
    """A CNN whose convolutions keep the sequence's length (odd kernels, stride 1) compiles: with an
    even kernel or a longer stride its output no longer lines up with the attention mask that the
    modules after it (Pooling) read, and sentence-transformers itself fails or misreads it."""
    kernels, strides = module.config.get("kernel_sizes", [1, 3, 5]), module.config.get("stride_sizes")
    if all(type(k) is int and k % 2 for k in kernels) and all(s == 1 for s in strides or []):
        return ""
    return (f"module {module.name!r}: a CNN with kernel sizes {kernels} and strides {strides} changes the sequence's "
            "length, so its output no longer lines up with the attention mask the modules after it read; a CNN with "
            "odd kernel sizes and stride 1 compiles")


def _not_compiled(module: ModuleSpec) -> str:
    name = module.type.rsplit(".", 1)[-1]
    reason = f": {_NOT_COMPILED_BECAUSE[name]}" if name in _NOT_COMPILED_BECAUSE else ""
    return f"module {module.name!r} is sentence-transformers' {name}, which this version does not compile{reason}"


def _transformer_problems(kind: ChainKind, module: ModuleSpec) -> list[str]:
    problems = []
    if module.transformer_task not in _INPUT_TASKS[kind]:
        problems.append(f"module {module.name!r}: a {kind.value} cannot start with a {module.transformer_task!r} "
                        "Transformer")
    problems += _modality_problems(kind, module)
    chat = takes_messages(module)
    if chat and module.config.get("query_expansion") is not None:
        problems.append(f"module {module.name!r} sets query_expansion on a chat-template backbone, which "
                        "sentence-transformers itself refuses to run (the template should append its own query tokens)")
    return problems + processing_problems(module.name, module.config, chat=chat)


def _vision_problems(chain: ChainSpec) -> list[str]:
    """Vision-language Transformers, whose chat messages carry images: Qwen-VL models (their model
    type read from the folder's config.json, as the architecture matrix reads it) in a
    SentenceTransformer."""
    problems = []
    for backbone in backbones(chain):
        module = next(m for m in chain.all_modules() if m.name == backbone.module)
        if not module.takes_vision_messages:
            continue
        if vision_family(backbone.model_type) is None:
            problems.append(f"module {module.name!r}: chat messages with images compile for Qwen2-VL, Qwen2.5-VL and "
                            f"Qwen3-VL models, not {backbone.model_type or 'a model without a model_type'}: "
                            f"{_OTHER_MODALITIES}")
        elif chain.kind is not ChainKind.SENTENCE_TRANSFORMER or chain.router_index() is not None:
            problems.append(f"module {module.name!r}: a Qwen-VL Transformer compiles as a SentenceTransformer "
                            f"without a Router in this version, not a {chain.kind.value}"
                            f"{' with one' if chain.router_index() is not None else ''}")
    return problems


def _modality_problems(kind: ChainKind, module: ModuleSpec) -> list[str]:
    """Text or chat messages; or CLIP-style text and image, each to one embedding, in a
    SentenceTransformer without a Router."""
    modalities = module.modalities
    if modalities in _TEXT_MODALITIES:
        return []
    if module.takes_vision_messages:
        return []  # checked with the model's type (_vision_problems)
    if modalities != _IMAGE_AND_TEXT:
        other = sorted(str(m) for m in modalities - {"text", "message", "image"})
        shown = other if other else f"the combination {sorted(str(m) for m in modalities)}"
        return [f"module {module.name!r}: text, chat-message and CLIP-style text+image input is compiled, not "
                f"{shown}: {_OTHER_MODALITIES}"]
    if kind is not ChainKind.SENTENCE_TRANSFORMER or module.config.get("module_output_name") != "sentence_embedding":
        return [f"module {module.name!r}: text+image input is compiled for a SentenceTransformer whose Transformer "
                "gives one embedding per text and per image (module_output_name 'sentence_embedding', as CLIP's "
                f"get_text_features and get_image_features do), not a {kind.value} with "
                f"{module.config.get('module_output_name')!r}"]
    return []
