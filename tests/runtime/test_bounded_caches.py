"""Every cache the loader keeps across calls whose keys callers choose stays at its bound, however
many distinct keys they send, and an entry evicted and computed again gives the same result: the
chat template's tail per prompt (``text.SUFFIX_CACHE``), the truncating tokenizers
(``text.TRUNCATING_CACHE``) and an OpenVINO model's compiled input shapes
(``backends.SHAPE_LIMIT``). The bounds are made small here, so that a few calls pass them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from packager.runtime import backends, load, text
from packager.runtime.memo import BoundedCache

LONG_DOCUMENT = " ".join(["the river carries silt to the sea and the delta grows"] * 40)  # past max_length


def test_a_bounded_cache_keeps_the_most_recently_used_and_recomputes_the_rest():
    cache: BoundedCache[str] = BoundedCache(3)
    computed: list[int] = []

    def value(key: int):
        return lambda: computed.append(key) or f"value of {key}"

    for key in range(100):
        assert cache.get(key, value(key)) == f"value of {key}"
        assert len(cache) == min(key + 1, 3)
    assert cache.get(98, value(98)) == "value of 98" and computed[-1] == 99  # kept: not computed again
    assert cache.get(5, value(5)) == "value of 5" and computed[-1] == 5  # evicted: computed again, for its key
    assert cache.get(99, value(99)) == "value of 99" and computed[-1] == 5  # the older 97 went, not 99
    assert len(cache) == 3
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_a_bounded_cache_shared_by_threads_gives_each_key_its_own_value():
    cache: BoundedCache[int] = BoundedCache(8)
    wrong: list[tuple[int, int]] = []

    def work(offset: int) -> None:
        for i in range(2000):
            key = (i * 7 + offset) % 50
            got = cache.get(key, lambda key=key: key * key)
            if got != key * key:
                wrong.append((key, got))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong and len(cache) == 8


def _encoder(model, verb: str = "predict") -> text.TextEncoder:
    return model._runner(verb).text


def test_the_chat_suffix_cache_stays_at_its_bound_whatever_prompts_callers_send(tiny_artifacts, monkeypatch):
    """Each prompt is a system message, part of the suffix's key: a server takes any number of
    them. Every truncated pair restores the template's tail; after eviction a prompt's scores are
    the ones it had before, and a fresh model's."""
    monkeypatch.setattr(text, "SUFFIX_CACHE", 4)
    model = load(tiny_artifacts["ce-chat"])
    prompts = [f"Judge whether the passage answers question {i}" for i in range(12)]
    pairs = [("where does the silt go", LONG_DOCUMENT), ("what grows", LONG_DOCUMENT + " delta")]
    first = [model.predict(pairs, prompt=p) for p in prompts]
    assert len(_encoder(model)._suffixes) == 4
    again = [model.predict(pairs, prompt=p) for p in reversed(prompts)][::-1]  # evicted and recomputed
    assert len(_encoder(model)._suffixes) == 4
    for p, before, after in zip(prompts, first, again, strict=True):
        np.testing.assert_array_equal(before, after, err_msg=p)
    fresh = load(tiny_artifacts["ce-chat"])
    np.testing.assert_array_equal(fresh.predict(pairs, prompt=prompts[0]), first[0])
    assert len({tuple(np.round(s, 6)) for s in first}) > 1  # the prompts do change the scores
    # a prompt longer than SUFFIX_KEY_CHARS is never kept (the key would hold it), yet restored
    long_prompt = "Judge carefully. " * (text.SUFFIX_KEY_CHARS // 10)
    keys = list(_encoder(model)._suffixes._entries)
    np.testing.assert_array_equal(model.predict(pairs, prompt=long_prompt), fresh.predict(pairs, prompt=long_prompt))
    assert list(_encoder(model)._suffixes._entries) == keys


def test_the_truncating_tokenizers_stay_at_their_bound(tiny_artifacts, monkeypatch):
    monkeypatch.setattr(text, "TRUNCATING_CACHE", 2)
    encoder = _encoder(load(tiny_artifacts["mean"]), "encode")
    for length in range(3, 30):
        ids = encoder.truncating(length).encode(LONG_DOCUMENT).ids
        assert len(ids) == length and len(encoder._truncating) <= 2
    assert len(encoder.truncating(5).encode(LONG_DOCUMENT).ids) == 5  # evicted long ago, made again


def test_an_openvino_route_that_cannot_bucket_is_compiled_again_at_its_shape_limit(tiny_openvino, monkeypatch):
    """A left-padded decoder runs one shape per (texts, length) a caller sends: the compiled model
    keeps kernels for each, so past SHAPE_LIMIT shapes it is compiled again, with the same results."""
    want = load(tiny_openvino["qwen-lasttoken"])
    monkeypatch.setattr(backends, "SHAPE_LIMIT", 3)
    model = load(tiny_openvino["qwen-lasttoken"])
    runner = model._runner("encode")
    assert not runner._bucketed  # left padding: shapes follow the callers' texts
    session = runner._session
    calls = [["word " * n] * rows for n in range(1, 12) for rows in (1, 3)]
    for texts in calls:
        np.testing.assert_allclose(model.encode(texts), want.encode(texts), rtol=0, atol=1e-6)
        assert session.shapes <= 3
    assert session._generation >= len(calls) // 3 - 1
    threads_wrong: list[int] = []

    def work(n: int) -> None:  # threads keep their own requests across recompiles
        for texts in calls[n::4]:
            if not np.allclose(model.encode(texts), want.encode(texts), rtol=0, atol=1e-6):
                threads_wrong.append(n)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not threads_wrong and session.shapes <= 3


@pytest.mark.parametrize("max_length", [128, 512, 8192, 32768])
def test_a_bucketed_route_never_reaches_the_shape_limit(max_length):
    """Every (rows, width) the runner can pad a batch to, for any texts and any batch_size, is
    fewer than SHAPE_LIMIT: a right-padded OpenVINO route is never compiled again."""
    from packager.runtime.batching import MAX_BATCH_TOKENS, batches, bucket_width

    widths = {max(n, min(bucket_width(n), max_length)) for n in range(1, max_length + 1)}
    shapes = set()
    for width in widths:
        for batch_size in range(1, MAX_BATCH_TOKENS + 2):
            for count in range(1, min(batch_size, max(1, MAX_BATCH_TOKENS // width)) + 1):
                for _, padded, rows in batches(list(range(count)), [width] * count, batch_size,
                                                   bucket_limit=max_length):
                    shapes.add((rows, padded))
    assert len(shapes) <= 126 < backends.SHAPE_LIMIT
