"""Gate decisions both ways, on stand-in models: the gate passes what reproduces the reference
and fails what does not (scale, order, structure), whatever the chain kind."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from packager.runtime.enums import ChainKind, ModuleKind, Precision
from packager.runtime.routes import VerbSpec
from packager.validators.gates import DEFAULT_GATES
from packager.validators.parity import check_parity

TEXTS = [f"text {i}" for i in range(12)]
PAIRS = [(f"query {q}", f"document {d}") for q in range(3) for d in range(5)]
RNG = np.random.default_rng(0)
EMBEDDINGS = RNG.normal(size=(len(TEXTS), 8)).astype(np.float32)
LOGITS = RNG.normal(size=len(PAIRS)).astype(np.float32) * 3


class Reference:
    """What the parity code calls on a sentence-transformers model."""

    def encode(self, texts, **kwargs):
        return EMBEDDINGS[: len(texts)]

    encode_query = encode_document = encode

    def predict(self, pairs, activation_fn=None, **kwargs):
        logits = torch.from_numpy(LOGITS[: len(pairs)]).unsqueeze(1)
        return (activation_fn or torch.nn.Sigmoid())(logits).squeeze(1).numpy()


class Candidate:
    """What the parity code calls on a loaded artifact; ``distort`` changes its outputs."""

    def __init__(self, kind: ChainKind, distort=lambda x: x) -> None:
        verb = VerbSpec(route="default")
        verbs = {"predict": verb} if kind is ChainKind.CROSS_ENCODER else {"encode": verb}
        self.manifest = SimpleNamespace(chain_kind=kind, verbs=verbs, prompts={}, default_prompt_name=None, modules=(),
                                        routes=(), takes_images=False)
        self.distort = distort

    def has_output(self, verb, meaning):
        return False

    def prompt_for(self, verb):
        return None

    def encode(self, texts, **kwargs):
        return self.distort(EMBEDDINGS[: len(texts)].copy())

    encode_query = encode_document = encode

    def predict(self, pairs, activation_fn=None, **kwargs):
        logits = self.distort(LOGITS[: len(pairs)].copy())
        return (activation_fn or (lambda x: 1 / (1 + np.exp(-x))))(logits)


@pytest.mark.parametrize("module,chat,query_length,runs", [
    (ModuleKind.POOLING, False, None, 1),  # the task reaches nothing: the three verbs are one call
    (ModuleKind.POOLING, False, 16, 2),  # encode_query truncates otherwise: its own call
    (ModuleKind.ROUTER, False, None, 3),  # the gate confirms the route resolved for each task
    (ModuleKind.CUSTOM, False, None, 3),  # custom code may read the task
    (ModuleKind.POOLING, True, None, 3),  # a chat template is rendered with the task
])
def test_verbs_that_differ_only_by_task_are_gated_once_where_the_task_reaches_nothing(module, chat, query_length,
                                                                                       runs):
    calls = []

    class Counting(Reference):
        def encode(self, texts, **kwargs):
            calls.append("reference")
            return EMBEDDINGS[: len(texts)]

        encode_query = encode_document = encode

    candidate = Candidate(ChainKind.SENTENCE_TRANSFORMER)
    candidate.manifest.verbs = {"encode": VerbSpec(route="default"),
                                "encode_query": VerbSpec(route="default", task="query", max_length=query_length),
                                "encode_document": VerbSpec(route="default", task="document")}
    candidate.manifest.modules = (SimpleNamespace(kind=ModuleKind.TRANSFORMER), SimpleNamespace(kind=module))
    candidate.manifest.routes = (SimpleNamespace(chat=object() if chat else None),)
    report = check_parity(Counting(), candidate, TEXTS, gate=_gate(ChainKind.SENTENCE_TRANSFORMER))
    assert report.passed and len(calls) == runs
    assert {c.metric for c in report.checks} == {f"{verb}.{metric}" for verb in candidate.manifest.verbs
                                                 for metric in _gate(ChainKind.SENTENCE_TRANSFORMER)}


def _gate(kind):
    return DEFAULT_GATES[(kind, Precision.FP32)]


@pytest.mark.parametrize("distort,passes", [
    (lambda x: x, True),
    (lambda x: x + np.float32(1e-7), True),  # float rounding
    (lambda x: x * 3, False),  # same direction, three times the length: cosine alone would pass it
    (lambda x: x[::-1], False),  # rows out of order
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), False),
])
def test_dense_gate(distort, passes):
    report = check_parity(Reference(), Candidate(ChainKind.SENTENCE_TRANSFORMER, distort), TEXTS,
                          gate=_gate(ChainKind.SENTENCE_TRANSFORMER))
    assert report.passed is passes, report.describe()


@pytest.mark.parametrize("distort,passes", [
    (lambda x: x, True),
    (lambda x: x + np.float32(2e-6), True),
    (lambda x: x + np.float32(0.01), False),  # small, but far beyond float rounding
    (lambda x: np.concatenate([x[:5][[1, 0, 2, 3, 4]], x[5:]]), False),  # two documents swap places
    (lambda x: x[:-1], False),  # a score missing
])
def test_cross_encoder_gate(distort, passes):
    report = check_parity(Reference(), Candidate(ChainKind.CROSS_ENCODER, distort), PAIRS,
                          gate=_gate(ChainKind.CROSS_ENCODER))
    assert report.passed is passes, report.describe()


def test_saturated_scores_do_not_hide_wrong_logits():
    """Large logits saturate the sigmoid: the scores agree, the logits (and ranking) do not."""
    global LOGITS
    saved, LOGITS = LOGITS, np.array([30, 31, 32, -30, -31] * 3, dtype=np.float32)
    try:
        reordered = np.array([32, 31, 30, -31, -30] * 3, dtype=np.float32)  # each query's ranking reversed
        report = check_parity(Reference(), Candidate(ChainKind.CROSS_ENCODER, lambda x: reordered), PAIRS,
                              gate=_gate(ChainKind.CROSS_ENCODER))
    finally:
        LOGITS = saved
    assert report.metrics["score_rel_diff"] < 1e-4 and not report.passed


@pytest.mark.parametrize("kind,inputs", [(ChainKind.SENTENCE_TRANSFORMER, TEXTS), (ChainKind.CROSS_ENCODER, PAIRS)])
def test_the_reference_runs_every_gate_call_first_and_none_after_its_release(kind, inputs):
    """The build runs every call a gate makes through ``run_gate_references`` before a candidate
    loads, then frees the torch weights: the gate then compares on the kept outputs alone, and a
    call it did not run first is refused rather than run on freed weights."""
    from packager.validators.parity import ReferenceRuns, run_gate_references

    class Counted(Reference):
        calls = 0

        def to(self, device):
            return self

        def encode(self, texts, **kwargs):
            Counted.calls += 1
            return super().encode(texts, **kwargs)

        def predict(self, pairs, activation_fn=None, **kwargs):
            Counted.calls += 1
            return super().predict(pairs, activation_fn=activation_fn, **kwargs)

    candidate = Candidate(kind)
    candidate.manifest.routes = (SimpleNamespace(name="default", chat=None, output=lambda meaning: None),)
    runs = ReferenceRuns(Counted())
    run_gate_references(runs, candidate.manifest, inputs)
    ran = Counted.calls
    runs.release()
    assert check_parity(runs, candidate, inputs, gate=DEFAULT_GATES[(kind, Precision.FP32)]).passed
    assert Counted.calls == ran > 0
    with pytest.raises(RuntimeError, match="released"):
        runs("predict" if kind is ChainKind.CROSS_ENCODER else "encode", inputs[:2])
