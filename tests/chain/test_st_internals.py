"""Every private sentence-transformers and transformers API in ``packager.chain.st_internals``,
exercised on the installed versions: an upgrade that renames or changes one fails here, naming the
entry and the versions it was checked against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version

import pytest
import torch

from packager.chain import load_reference, read_chain
from packager.chain import st_internals as internals


@contextmanager
def entry(name: str) -> Iterator[None]:
    """Turn any failure inside the block into one that names the entry and both versions."""
    try:
        yield
    except Exception as e:
        installed = {package: version(package) for package in internals.CHECKED_WITH}
        pytest.fail(f"st_internals.{name} no longer works: {type(e).__name__}: {e}\n"
                    f"checked against {internals.CHECKED_WITH}, installed {installed}; "
                    f"update packager/chain/st_internals.py for the new version", pytrace=False)


def _reference(tiny_chains, name: str):
    return load_reference(read_chain(str(tiny_chains[name])))


def _module(reference, class_name: str):
    return next(m for m in reference.modules() if type(m).__name__ == class_name)


def test_every_entry_is_exercised_here():
    entries = {name for name, value in vars(internals).items() if callable(value) and not name.startswith("_")
               and getattr(value, "__module__", "") == internals.__name__}
    assert entries == {"chat_template_declares_task", "resolve_route", "can_exclude_prompt", "pool_excluding",
                       "skiplist_ids", "pil_backend", "watch_loading"}, "a new entry needs its test here"


def test_chat_template_declares_task(tiny_chains):
    declares = {}
    with entry("chat_template_declares_task"):
        for name in ("ce-chat", "ce-chat-classifier"):
            transformer = _module(_reference(tiny_chains, name), "Transformer")
            declares[name] = internals.chat_template_declares_task(transformer)
    assert declares == {"ce-chat": False, "ce-chat-classifier": True}


def test_resolve_route(tiny_chains):
    router = _module(_reference(tiny_chains, "router-dense"), "Router")
    with entry("resolve_route"):
        routes = {task: internals.resolve_route(router, task=task, modality="text") for task in ("query", "document")}
    assert set(routes.values()) <= set(router.sub_modules), routes
    assert routes["query"] != routes["document"], routes


def test_pool_excluding_is_the_modules_own_pooling(tiny_chains):
    pooling = _module(_reference(tiny_chains, "exclude-prompt"), "Pooling")
    width = pooling.get_sentence_embedding_dimension() // 2  # two pooling modes, concatenated
    tokens = torch.randn(2, 5, width, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with entry("can_exclude_prompt"):
        assert internals.can_exclude_prompt(pooling)
    with entry("pool_excluding"), torch.no_grad():
        vectors = internals.pool_excluding(pooling, tokens, mask, {"token_embeddings": tokens, "attention_mask": mask},
                                           mask)
        pooled = torch.cat(vectors, dim=-1)
        expected = pooling({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    # Nothing excluded: the module's own forward without a prompt.
    torch.testing.assert_close(pooled, expected)
    assert "_exclude_prompt_from_mask" not in vars(pooling), "the patch is undone"


def test_skiplist_ids(tiny_chains):
    mask = _module(_reference(tiny_chains, "mv-skiplist"), "MultiVectorMask")
    with entry("skiplist_ids"):
        ids = internals.skiplist_ids(mask)
        assert ids is not None and len(ids), "the tiny chain's skiplist words resolve to token ids"
        assert all(isinstance(int(i), int) for i in ids)


def test_pil_backend(tiny_chains):
    transformer = _module(_reference(tiny_chains, "clip"), "Transformer")
    with entry("pil_backend"):
        assert isinstance(transformer.processor.image_processor, internals.pil_backend())


def test_watch_loading(tiny_chains):
    with entry("watch_loading"):
        with internals.watch_loading() as reports:
            read = read_chain(str(tiny_chains["mean"]))
            from packager.chain.reference import open_model

            open_model(read.source.folder, read.kind, trust_remote_code=False, allow_pickle=False)
        assert reports, "transformers reported no loading at all: its report function moved"
        for model, info in reports:
            assert isinstance(model, str)
            assert hasattr(info, "missing_keys") and hasattr(info, "mismatched_keys")
