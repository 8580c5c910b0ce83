"""Every private sentence-transformers and transformers API the build relies on, in one place, and
the versions they were checked against.

These are underscore names and internal modules: a release may rename or remove any of them
without notice. Each is reached through one function here, so an upgrade changes this file only,
and ``tests/chain/test_st_internals.py`` exercises every entry on the installed versions, naming
the entry that broke.

    chat_template_declares_task   Transformer._chat_template_declares_task()  (sentence-transformers)
    resolve_route                 Router._resolve_route(task=, modality=)       (sentence-transformers)
    can_exclude_prompt            Pooling._forward_padded, _exclude_prompt_from_mask
    pool_excluding                 the same two, called                         (sentence-transformers)
    skiplist_ids                  MultiVectorMask._skiplist_ids                 (sentence-transformers)
    pil_backend                   transformers.image_processing_backends.PilBackend  (internal module)
    watch_loading                 transformers.modeling_utils.log_state_dict_report  (internal hook)
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# The versions every entry below was checked against (pip's distribution names).
CHECKED_WITH = {"sentence-transformers": "6.2.0", "transformers": "5.23.0"}

_WATCHING = threading.Lock()


def chat_template_declares_task(module: Any) -> bool:
    """Whether a message-modality Transformer's chat template reads the ``task`` variable."""
    return bool(module._chat_template_declares_task())


def resolve_route(router: Any, *, task: str | None, modality: str) -> str:
    """The route a Router's forward would pick for ``task`` and ``modality`` (ValueError: none)."""
    return str(router._resolve_route(task=task, modality=modality))


def can_exclude_prompt(pooling: Any) -> bool:
    """Whether this Pooling has the two methods ``pool_excluding`` goes through."""
    return hasattr(pooling, "_forward_padded") and hasattr(pooling, "_exclude_prompt_from_mask")


def pool_excluding(pooling: Any, token_embeddings: Any, mask: Any, features: dict[str, Any], excluded: Any) -> Any:
    """Pooling's own pooling code over ``mask`` with ``excluded`` as the prompt-excluded mask: its
    prompt branch answered by a tensor instead of a Python int, so it can be exported."""
    pooling._exclude_prompt_from_mask = lambda *_: excluded  # answers the module's prompt branch
    try:
        return pooling._forward_padded(token_embeddings, mask, features, prompt_length=1)
    finally:
        del pooling._exclude_prompt_from_mask


def skiplist_ids(mask: Any) -> Any | None:
    """A MultiVectorMask's skiplist token ids (a tensor), None where it has none."""
    return getattr(mask, "_skiplist_ids", None)


def pil_backend() -> type:
    """transformers' PIL image-processing backend, the class the runtime's preprocessing follows."""
    from transformers.image_processing_backends import PilBackend

    return PilBackend


@contextmanager
def watch_loading() -> Iterator[list[tuple[str, Any]]]:
    """Collect transformers' loading reports (model class, LoadStateDictInfo) while the block runs.

    transformers initialises weights that a checkpoint lacks at random and only logs it; the
    caller refuses such a model. The report function is wrapped for the block's duration, one
    block at a time: two threads wrapping it at once would leave one wrapper behind.
    """
    with _WATCHING:
        yield from _watch()


def _watch() -> Iterator[list[tuple[str, Any]]]:
    import transformers.modeling_utils as modeling

    original = getattr(modeling, "log_state_dict_report", None)
    reports: list[tuple[str, Any]] = []
    if original is None:  # a transformers version that reports differently: the test suite says so
        yield reports
        return

    signature = inspect.signature(original)

    def record(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(*args, **kwargs).arguments
        reports.append((type(arguments["model"]).__name__, arguments["loading_info"]))
        return original(*args, **kwargs)

    modeling.log_state_dict_report = record
    try:
        yield reports
    finally:
        modeling.log_state_dict_report = original
