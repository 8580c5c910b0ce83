"""The loader under load: many threads on one model, hostile and extreme inputs, memory over
many calls of varying shapes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from packager.runtime import InvalidInputError, load
from packager.validators.texts import real_sentences

THREADS = 16
CALLS = 1000


def _calls(pairs: bool, count: int = CALLS, seed: int = 0) -> list[list]:
    """Mixed sizes: 1 to 24 inputs a call, texts of one to eight sentences (beyond max length)."""
    rng, sentences = random.Random(seed), real_sentences()

    def text() -> str:
        return " ".join(rng.sample(sentences, rng.choice([1, 1, 1, 2, 8])))

    return [[(text(), text()) if pairs else text() for _ in range(rng.randint(1, 24))] for _ in range(count)]


@pytest.mark.parametrize("fmt,name,verb", [("onnx", "mean", "encode"), ("openvino", "mean", "encode"),
                                           ("onnx", "ce-sigmoid", "predict")])
def test_sixteen_threads_of_mixed_calls_match_one_thread(fmt, name, verb, tiny_artifacts, tiny_openvino):
    model = load((tiny_artifacts if fmt == "onnx" else tiny_openvino)[name])
    run = getattr(model, verb)
    calls = _calls(pairs=verb == "predict")
    expected = [run(call) for call in calls]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(run, calls))
    for call, want, got in zip(calls, expected, results, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(call)[:200])


@pytest.fixture(scope="module")
def encoder(tiny_artifacts):
    return load(tiny_artifacts["mean"])


@pytest.fixture(scope="module")
def scorer(tiny_artifacts):
    return load(tiny_artifacts["ce-sigmoid"])


@pytest.mark.parametrize("inputs,shape", [
    ([], (0, 32)), ("", (32,)), ([""], (1, 32)), (["", "a"], (2, 32)), ("\x00", (32,)), ("🙂" * 5000, (32,)),
    ("word " * 200_000, (32,)), (("a", "b"), (2, 32)), (iter(["a", "b"]), (2, 32)),
])
def test_encode_edge_inputs_have_defined_results(encoder, inputs, shape):
    assert encoder.encode(inputs).shape == shape


def test_ten_thousand_texts_in_one_call_keep_their_order(encoder):
    texts = [real_sentences()[i % 500] for i in range(10_000)]
    result = encoder.encode(texts)
    assert result.shape == (10_000, 32) and result.dtype == np.float32
    np.testing.assert_allclose(result[7_654], encoder.encode(texts[7_654]), atol=1e-6)


@pytest.mark.parametrize("inputs,match", [
    (None, "got NoneType"), ([None], "item 0 is NoneType"), (["a", None], "item 1 is NoneType"), ([1], "item 0 is int"),
    (b"bytes", "got bytes"), ({"a": 1}, "got dict"), ("\ud800", "not valid Unicode"),
    (["ok", "a\udfffb"], "item 1 is not valid Unicode"),
])
def test_encode_bad_inputs_raise_a_clear_error(encoder, inputs, match):
    with pytest.raises(InvalidInputError, match=match):
        encoder.encode(inputs)


@pytest.mark.parametrize("inputs,shape", [
    ([], (0,)), (("", ""), ()), ([("", "")], (1,)), (["query", "document"], ()), ([("a", "b")] * 10_000, (10_000,)),
])
def test_predict_edge_inputs_have_defined_results(scorer, inputs, shape):
    scores = np.asarray(scorer.predict(inputs))
    assert scores.shape == shape and np.isfinite(scores).all()


def test_a_pair_of_two_very_long_texts_is_scored_in_bounded_memory(scorer):
    """100,000 tokens a side: tokenizers alone would combine every overflowing window of both
    (tokenizers #2035) and ran this machine out of its 24 GB; the loader cuts both sides first."""
    long, moderate = scorer.predict([("q " * 100_000, "d " * 100_000), ("q " * 300, "d " * 300)])
    assert np.isfinite(long) and long == moderate


@pytest.mark.parametrize("side", ["right", "left"])
def test_cut_pairs_tokenize_exactly_as_the_plain_tokenizer(side, tiny_artifacts):
    import dataclasses

    from tokenizers import Tokenizer

    from packager.runtime.enums import Side
    from packager.runtime.manifest import read_manifest
    from packager.runtime.text import TextEncoder

    artifact = tiny_artifacts["ce-sigmoid"]
    route = read_manifest(artifact).routes[0]
    spec = dataclasses.replace(route.tokenizer, truncation_side=Side(side))
    encoder = TextEncoder.open(artifact, spec, route.inputs)
    plain = Tokenizer.from_file(str(artifact / spec.file))
    plain.enable_truncation(spec.max_length, strategy="longest_first", direction=side)
    s = real_sentences()
    pairs = [(" ".join(s[:20]), " ".join(s[400:420])), (" ".join(s[:20]), " ".join(s[:20])),
             (" ".join(s[30:60]), " ".join(s[100:110])), ("short", " ".join(s[:40])),
             (" ".join(s[200:215]), " ".join(s[300:340]))]
    cut = [encoder.bounded_pair(*pair, max_length=spec.max_length) for pair in pairs]
    assert sum(c != pair for c, pair in zip(cut, pairs, strict=True)) == 4  # all but the one with a short side
    encoded, _ = encoder.encode(pairs, max_length=spec.max_length)
    for ours, theirs in zip(encoded, plain.encode_batch(pairs), strict=True):
        assert (ours.ids, ours.type_ids) == (theirs.ids, theirs.type_ids)


@pytest.mark.parametrize("inputs,match", [
    (None, "got NoneType"), ("just a string", "got str"), ([("a",)], "item 0 is"), ([("a", None)], "item 0 is"),
    ([("a", "b"), ("c", 3)], "item 1 is"), ([("a", "\udc80")], "item 0 is not valid Unicode"),
])
def test_predict_bad_inputs_raise_a_clear_error(scorer, inputs, match):
    with pytest.raises(InvalidInputError, match=match):
        scorer.predict(inputs)


_MEMORY_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from loader import load

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

model = load(sys.argv[1], threads=2)
calls = json.loads(open(sys.argv[2]).read())
samples = [rss_mb()]
for _ in range(4):
    for call in calls:
        model.encode(call, batch_size=32)
    samples.append(rss_mb())
print(json.dumps(samples))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_stops_growing_once_every_shape_was_seen(tiny_artifacts, tmp_path, capsys):
    """The same 400 calls of varying shapes, four times over, in a fresh process with the
    artifact's own loader: RSS may grow while new shapes arrive (round 1), not after. The
    MiniLM figures are benchmarks/bench_memory.py's."""
    calls = tmp_path / "calls.json"
    calls.write_text(json.dumps(_calls(pairs=False, count=400, seed=1)))
    samples = json.loads(subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tiny_artifacts["mean"]), str(calls)],
                                        check=True, capture_output=True, text=True).stdout)
    with capsys.disabled():
        print(f"\nRSS (MB) after loading and after each of 4 rounds of 400 calls: {[round(s, 1) for s in samples]}")
    assert samples[4] - samples[2] < 8, samples
