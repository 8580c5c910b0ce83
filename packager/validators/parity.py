"""Run the reference and the candidate end to end (text in, result out) and gate the result.

The reference is sentence-transformers running the saved chain in torch; the candidate is the
artifact's own loader, tokenizer included. Nothing is shared between the two sides but the
inputs. Every verb the artifact offers is compared (verbs making the same call, once).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import SourceError
from packager.runtime.enums import ChainKind, ModuleKind, OutputMeaning
from packager.runtime.manifest import Manifest
from packager.runtime.model import resolve_prompt
from packager.runtime.routes import VerbSpec
from packager.scratch import scratch_dir
from packager.validators.image_samples import CAPTIONS, parity_images, parity_messages
from packager.validators.metrics import (
    dense_metrics,
    groups,
    logit_metrics,
    max_abs_diff,
    relative_max_diff,
    row_cosine,
    score_metrics,
    sparse_metrics,
)
from packager.validators.report import Check, Gate, ParityReport, inputs_digest

log = logging.getLogger(__name__)
BATCH_SIZE = 32


class ReferenceRuns:
    """The torch reference, run once per distinct call: every variant of a build, and every verb
    that makes the same call, is compared with the same reference outputs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._outputs: dict[tuple[str, str, str], Any] = {}
        self._released = False

    def release(self) -> None:
        """Free the torch weights once every call the gates will make was run
        (``run_gate_references``): a build's later steps hold the ONNX Runtime or OpenVINO copy
        of the model, not both (a 0.6B decoder's build would otherwise hold 2x its weights at
        every gate). The module objects stay (their weights on the meta device): the manifest
        reads their settings. A call not run before fails here rather than on meta tensors."""
        import gc

        if self._released:
            return
        self.model.to("meta")
        self._released = True
        gc.collect()
        _trim_heap()

    def __call__(self, verb: str, inputs: list, **kwargs: Any) -> Any:
        return self._run((verb, inputs_digest(inputs), repr(sorted(kwargs.items()))), verb, inputs, kwargs, inputs)

    def images(self, labels: list[str], images: list, **kwargs: Any) -> Any:
        """``encode`` of ``images``, which their ``labels`` name (and key)."""
        return self._run(("encode", inputs_digest(["images", *labels]), repr(sorted(kwargs.items()))), "encode",
                         images, kwargs, labels)

    def _run(self, key: tuple[str, str, str], verb: str, inputs: list, kwargs: dict[str, Any], names: list) -> Any:
        """The reference's outputs of one call, refused (as the source's fault) if the call fails
        or any output is NaN or Inf: nothing downstream (output ranges, gates) could mean anything."""
        if key in self._outputs:
            return self._outputs[key]
        shown = {k: v for k, v in kwargs.items() if k in ("prompt", "prompt_name")}
        if self._released:
            raise RuntimeError(f"the torch reference was released before {verb}({shown or ''}) of these inputs ran")
        try:
            outputs = getattr(self.model, verb)(inputs, **kwargs)
        except Exception as e:  # the saved chain's own code and settings
            raise SourceError(f"the reference (sentence-transformers) fails on {verb}({shown or ''}) of the parity "
                              f"inputs, so there is nothing to compare with: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''}") from e
        bad = non_finite_items(outputs)
        if bad:
            first = str(names[bad[0]])
            raise SourceError(f"the reference (sentence-transformers) outputs NaN or Inf for {len(bad)} of "
                              f"{len(inputs)} inputs of {verb}({shown or ''}), the first being input {bad[0]} "
                              f"({first[:80]!r}{'...' if len(first) > 80 else ''}): the source's weights or config "
                              "make the model overflow, so there is nothing to compare with. Check its weights and "
                              "dtype.")
        self._outputs[key] = outputs
        return outputs


def non_finite_items(outputs: Any) -> list[int]:
    """The indices of the items of a batch of outputs (rows of an array or tensor, sparse ones
    included, or the items of a list) that hold a NaN or an Inf."""
    if isinstance(outputs, (list, tuple)):
        return [i for i, item in enumerate(outputs) if not _all_finite(item)]
    if getattr(outputs, "is_sparse", False):
        coalesced = outputs.coalesce()
        bad = ~np.isfinite(coalesced.values().detach().float().cpu().numpy())
        return sorted({int(i) for i in coalesced.indices()[0].cpu().numpy()[bad]})
    values = _numbers(outputs)
    if values is None:
        return []
    if values.ndim == 0:
        return [] if np.isfinite(values) else [0]
    return np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)).tolist()


def _all_finite(item: Any) -> bool:
    if isinstance(item, dict):
        return all(_all_finite(v) for v in item.values())
    if isinstance(item, (list, tuple)) or getattr(item, "is_sparse", False):
        return not non_finite_items(item)
    values = _numbers(item)
    return values is None or bool(np.isfinite(values).all())


def _numbers(value: Any) -> np.ndarray | None:
    """``value`` (a torch tensor, an array, a number) as a float array; None if it holds no numbers."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ParityCall:
    """One way of calling a verb that the gate compares: as it is (its default prompt), and with
    the prompt off (when it has one) or on (when it has none and the model saves prompts)."""

    label: str  # how its metrics are named: "encode_query", "predict:no prompt", "encode:prompt query"
    verb_name: str
    verb: VerbSpec
    prompt: str | None  # the prompt it resolves to
    kwargs: dict[str, str]  # what both sides are called with
    key: tuple[VerbSpec, str | None]  # calls with the same key compute the same thing


def parity_calls(verbs: dict[str, VerbSpec], prompts: dict[str, str], default_prompt_name: str | None, *,
                 tasks_matter: bool = True) -> list[ParityCall]:
    """Each verb as called plainly and, where the chain has prompts, the other way too: without
    its prompt if it has one, else with the first saved one. Labels are valid MLflow metric and
    tag names (``encode:no prompt``). Calls share a key when they run the same route with the same
    settings and prompt, and the same task unless ``tasks_matter`` is false (``tasks_matter``)."""
    calls = []
    saved = [name for name, text in prompts.items() if text]  # an empty prompt is no prompt

    def call(label: str, name: str, verb: VerbSpec, prompt: str | None, kwargs: dict[str, str]) -> ParityCall:
        key = (verb if tasks_matter else replace(verb, task=None), prompt or None)
        return ParityCall(label, name, verb, prompt, kwargs, key)

    for name, verb in verbs.items():
        prompt = resolve_prompt(name, prompts, default_prompt_name)
        calls.append(call(name, name, verb, prompt, {}))
        if prompt:
            calls.append(call(f"{name}:no prompt", name, verb, None, {"prompt": ""}))
        elif saved:
            label = re.sub(r"[^A-Za-z0-9_\- ]", "_", saved[0])
            calls.append(call(f"{name}:prompt {label}", name, verb, prompts[saved[0]], {"prompt_name": saved[0]}))
    return calls


def tasks_matter(modules: Any, routes: Any) -> bool:
    """Whether a verb's task can change what it computes beyond the rest of its ``VerbSpec``:
    through a Router (the gate confirms, task by task, the route the build resolved), a chat
    template (rendered with the task) or a custom module (which may read it). Elsewhere
    ``encode_query`` and ``encode_document`` of one route without prompts are one call.
    ``modules`` have a ``kind`` and ``routes`` a ``chat`` (a manifest's, or the build's own)."""
    return any(m.kind in (ModuleKind.ROUTER, ModuleKind.CUSTOM) for m in modules) \
        or any(route.chat is not None for route in routes)


def gate_calls(manifest: Manifest) -> list[ParityCall]:
    """The calls the gate makes of an artifact's verbs."""
    return parity_calls(manifest.verbs, manifest.prompts, manifest.default_prompt_name,
                        tasks_matter=tasks_matter(manifest.modules, manifest.routes))


def check_parity(reference: Any, candidate: Any, inputs: list, *, gate: Gate,
                 advance: Callable[[int], None] | None = None) -> ParityReport:
    """Compare every distinct call of ``candidate``'s verbs (``parity_calls``) with ``reference``
    (a model, or its ``ReferenceRuns``) on ``inputs`` (texts, or pairs for cross-encoders) and
    apply ``gate``. Calls that compute the same thing are compared once and reported under each
    label; ``advance(n)`` is called as calls are done."""
    runs = reference if isinstance(reference, ReferenceRuns) else ReferenceRuns(reference)
    comparisons: dict[ChainKind, Callable[..., Compared]] = {
        ChainKind.SENTENCE_TRANSFORMER: _dense, ChainKind.SPARSE_ENCODER: _sparse, ChainKind.CROSS_ENCODER: _scores,
        ChainKind.MULTI_VECTOR_ENCODER: _MultiVector()}
    compare = comparisons[candidate.manifest.chain_kind]
    manifest = candidate.manifest
    calls = gate_calls(manifest)
    grouped = _grouped(calls)
    metrics: dict[str, float] = {}
    checks: list[Check] = []
    problems: list[str] = []
    worst: list[dict] = []
    samples: dict[str, dict[str, list[float]]] = {}
    for same in grouped.values():
        log.info("parity: %s of %d inputs, torch reference vs the artifact's loader",
                 " = ".join(c.label for c in same), len(inputs))
        found, found_problems, found_worst, sample = compare(runs, candidate, same[0], inputs)
        for call in same:
            prefix = f"{call.label}." if len(calls) > 1 else ""
            metrics.update({prefix + k: v for k, v in found.items()})
            if not found_problems:
                checks += [Check(prefix + metric, found.get(metric, float("nan")), threshold)
                           for metric, threshold in gate.items()]
            problems += [prefix + p for p in found_problems]
            worst += [{"verb": call.label, **w} for w in found_worst]
            samples[call.label] = sample
        if advance is not None:
            advance(len(same))
    if manifest.takes_images:
        log.info("parity: images, torch reference vs the artifact's loader")
        found, found_problems, found_worst, sample = _images(runs, candidate)
        metrics.update({f"images.{k}": v for k, v in found.items()})
        image_gate = {**gate, **({"similarity_rel_diff": gate["max_rel_diff"]} if "max_rel_diff" in gate else {})}
        if not found_problems:
            checks += [Check(f"images.{metric}", found.get(metric, float("nan")), threshold)
                       for metric, threshold in image_gate.items()]
        problems += [f"images.{p}" for p in found_problems]
        worst += [{"verb": "images", **w} for w in found_worst]
        samples["images"] = sample
    return ParityReport(inputs=len(inputs), inputs_sha256=inputs_digest(inputs), metrics=metrics,
                        checks=tuple(checks), problems=tuple(problems), worst=tuple(worst), samples=samples)


def _grouped(calls: list[ParityCall]) -> dict[tuple, list[ParityCall]]:
    """Calls that compute the same thing, together: the first of each group is the one run."""
    grouped: dict[tuple, list[ParityCall]] = {}
    for call in calls:
        grouped.setdefault(call.key, []).append(call)
    return grouped


def run_gate_references(reference: ReferenceRuns, manifest: Manifest, inputs: list) -> None:
    """Run every reference call ``check_parity`` makes for an artifact with ``manifest`` on
    ``inputs``, kept by ``reference``: the build runs them before it loads a candidate, so the
    torch model and the candidate's engine never hold the weights together, and frees the torch
    weights after (``ReferenceRuns.release``). Each side below is the one its comparison calls."""
    kind = manifest.chain_kind
    routes = {route.name: route for route in manifest.routes}
    for same in _grouped(gate_calls(manifest)).values():
        call = same[0]
        if kind is ChainKind.SENTENCE_TRANSFORMER:
            _dense_reference(reference, call, inputs)
            if routes[call.verb.route].output(OutputMeaning.TOKEN_EMBEDDINGS) is not None:
                _token_reference(reference, call, inputs)
        elif kind is ChainKind.SPARSE_ENCODER:
            _sparse_reference(reference, call, inputs)
        elif kind is ChainKind.CROSS_ENCODER:
            for logits in (True, False):
                _score_reference(reference, call, inputs, logits=logits)
        else:
            _multi_vector_reference(reference, call.verb_name, inputs, call.kwargs)
            _multi_vector_reference(reference, "encode_document", inputs, {})
    if manifest.takes_images:
        with scratch_dir("parity-images") as folder:
            _image_references(reference, _gate_images(manifest, Path(folder)))


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing):
    freed tensors below glibc's mmap threshold stay in the process otherwise."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    if library is not None and hasattr(library, "malloc_trim"):
        library.malloc_trim(0)


Compared = tuple[dict[str, float], list[str], list[dict], dict[str, list[float]]]  # metrics, problems, worst, samples


def _dense(reference: ReferenceRuns, candidate: Any, call: ParityCall, texts: list[str]) -> Compared:
    verb = call.verb_name
    ref = _dense_reference(reference, call, texts)
    cand = np.asarray(getattr(candidate, verb)(texts, batch_size=BATCH_SIZE, **call.kwargs))
    problems = _shape_problems("sentence_embedding", ref, cand)
    if problems:
        return {}, problems, [], {}
    metrics = dense_metrics(ref, cand)
    if candidate.has_output(verb, OutputMeaning.TOKEN_EMBEDDINGS):
        metrics["token_min_cosine"] = _token_min_cosine(reference, candidate, call, texts, problems)
    cosine = row_cosine(ref, cand)
    return metrics, problems, _worst(texts, cosine), {"cosine": cosine.tolist()}


def _dense_reference(reference: ReferenceRuns, call: ParityCall, texts: list[str]) -> np.ndarray:
    return np.asarray(reference(call.verb_name, texts, batch_size=BATCH_SIZE, convert_to_numpy=True,
                                show_progress_bar=False, **call.kwargs))


def _images(reference: ReferenceRuns, candidate: Any) -> Compared:
    """Each parity image's embedding (per-image cosine, as for texts) and the text-image
    similarity matrix of the captions against the images, each side scored by its own
    ``similarity``. Images take no prompt, so ``encode`` stands for every verb."""
    with scratch_dir("parity-images") as folder:
        return _compare_images(reference, candidate, _gate_images(candidate.manifest, Path(folder)))


def _gate_images(manifest: Manifest, folder: Path) -> dict[str, Any]:
    """The parity images; for a vision-language route, with messages that mix them with texts."""
    images = parity_images(folder)
    return {**images, **parity_messages(images)} if any(r.vision for r in manifest.routes) else images


def _compare_images(reference: ReferenceRuns, candidate: Any, images: dict[str, Any]) -> Compared:
    labels, values = list(images), list(images.values())
    ref, ref_captions = _image_references(reference, images)
    cand = np.asarray(candidate.encode(values, batch_size=BATCH_SIZE))
    problems = _shape_problems("image embeddings", ref, cand)
    if problems:
        return {}, problems, [], {}
    captions = list(CAPTIONS)
    ref_similarity = np.asarray(reference.model.similarity(ref_captions, ref))
    cand_similarity = candidate.similarity(candidate.encode(captions, batch_size=BATCH_SIZE), cand)
    cosine = row_cosine(ref, cand)
    metrics = {**dense_metrics(ref, cand), "similarity_rel_diff": relative_max_diff(ref_similarity, cand_similarity)}
    worst = [{"image": labels[i], "cosine": float(cosine[i])} for i in np.argsort(cosine)[:3]]
    return metrics, problems, worst, {"cosine": cosine.tolist()}


def _image_references(reference: ReferenceRuns, images: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """The reference's embeddings of the parity images, and of the captions. Chat messages (lists
    of message dicts) are encoded in a call of their own: in a batch that mixes them with other
    inputs, sentence-transformers 6.2 wraps each conversation as a content part of type "message",
    which templates skip, and embeds an empty message (its text and images dropped)."""
    settings: dict[str, Any] = {"batch_size": BATCH_SIZE, "convert_to_numpy": True, "show_progress_bar": False}
    rows: list[Any] = [None] * len(images)
    labels, values = list(images), list(images.values())
    for conversations in (False, True):
        at = [i for i, value in enumerate(values) if isinstance(value, list) == conversations]
        if at:
            found = reference.images([labels[i] for i in at], [values[i] for i in at], **settings)
            for i, row in zip(at, found, strict=True):
                rows[i] = row
    return np.asarray(rows), reference("encode", list(CAPTIONS), **settings)


def _sparse(reference: ReferenceRuns, candidate: Any, call: ParityCall, texts: list[str]) -> Compared:
    verb = call.verb_name
    ref = _sparse_reference(reference, call, texts)
    ref = ref.detach().cpu().numpy() if len(texts) else np.zeros((0, candidate.manifest.embedding_dimension))
    cand = getattr(candidate, verb)(texts, batch_size=BATCH_SIZE, **call.kwargs).toarray()
    problems = _shape_problems("sparse_embedding", ref, cand)
    if problems:
        return {}, problems, [], {}
    cosine = row_cosine(ref, cand)
    return sparse_metrics(ref, cand), problems, _worst(texts, cosine), {"cosine": cosine.tolist()}


def _sparse_reference(reference: ReferenceRuns, call: ParityCall, texts: list[str]) -> Any:
    return reference(call.verb_name, texts, batch_size=BATCH_SIZE, convert_to_tensor=True,
                     convert_to_sparse_tensor=False, show_progress_bar=False, **call.kwargs)


def _scores(reference: ReferenceRuns, candidate: Any, call: ParityCall, pairs: list[tuple[str, str]]) -> Compared:
    """Logits (a saturating activation would hide their errors) and predict()'s own scores."""
    def both(logits: bool) -> tuple[np.ndarray, np.ndarray]:
        ref = _score_reference(reference, call, pairs, logits=logits)
        return ref, np.asarray(candidate.predict(pairs, batch_size=BATCH_SIZE,
                                                 activation_fn=(lambda x: x) if logits else None, **call.kwargs))

    ref_logits, cand_logits = both(logits=True)
    ref, cand = both(logits=False)
    problems = _shape_problems("logits", ref_logits, cand_logits) + _shape_problems("scores", ref, cand)
    if problems:
        return {}, problems, [], {}
    metrics = {"max_abs_diff": max_abs_diff(ref, cand), "score_rel_diff": relative_max_diff(ref, cand),
               **logit_metrics(ref_logits, cand_logits, groups(pairs))}
    difference = np.abs(ref - cand).reshape(len(pairs), -1).max(axis=1)
    worst = [{"pair": [a[:100], b[:100]], "abs_diff": float(difference[i])}
             for i, (a, b) in ((i, pairs[i]) for i in np.argsort(-difference)[:3])]
    return metrics, problems, worst, {"reference": ref.ravel().tolist(), "candidate": cand.ravel().tolist()}


def _score_reference(reference: ReferenceRuns, call: ParityCall, pairs: list[tuple[str, str]], *,
                     logits: bool) -> np.ndarray:
    """The reference's logits (no activation), or its scores."""
    import torch

    return np.asarray(reference("predict", pairs, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False,
                                activation_fn=torch.nn.Identity() if logits else None, **call.kwargs))


class _MultiVector:
    """Multi-vector parity: each text's kept tokens (their count, and each token's cosine), and
    the MaxSim scores of the call's outputs, as queries, against the plain ``encode_document`` of
    the same texts as documents: each side scored by its own ``similarity``. The reference's
    outputs are kept by ``ReferenceRuns``, the candidate's here, so each call runs once."""

    def __init__(self) -> None:
        self._candidate: dict[tuple, list[np.ndarray]] = {}

    def __call__(self, reference: ReferenceRuns, candidate: Any, call: ParityCall, texts: list[str]) -> Compared:
        ref = _multi_vector_reference(reference, call.verb_name, texts, call.kwargs)
        cand = self._run(candidate, call.verb_name, texts, call.kwargs)
        problems = _count_problems(ref, cand) or [problem for i, (r, c) in enumerate(zip(ref, cand, strict=True))
                                                  for problem in _shape_problems(f"token_embeddings[{i}]", r, c)]
        if problems:
            return {}, problems, [], {}
        ref_documents = _multi_vector_reference(reference, "encode_document", texts, {})
        ref_scores = reference.model.similarity(ref, ref_documents).detach().cpu().numpy()
        cand_scores = candidate.similarity(cand, self._run(candidate, "encode_document", texts, {}))
        # A text against itself wins on both sides whatever the error, and a document without
        # tokens scores a constant: neither says anything about ranking.
        compared = ~np.eye(len(texts), dtype=bool) & np.array([len(d) > 0 for d in ref_documents])
        cosine = [row_cosine(r, c) for r, c in zip(ref, cand, strict=True)]
        every = np.concatenate(cosine) if cosine else np.ones(1)
        metrics = {"token_min_cosine": float(every.min()), "token_mean_cosine": float(every.mean()),
                   "max_abs_diff": max((max_abs_diff(r, c) for r, c in zip(ref, cand, strict=True)), default=0.0),
                   "tokens_mean": float(np.mean([len(r) for r in ref])) if ref else 0.0,
                   **score_metrics(ref_scores, cand_scores, compared)}
        per_text = np.array([c.min() if len(c) else 1.0 for c in cosine])
        return metrics, problems, _worst(texts, per_text), {"cosine": per_text.tolist()}

    def _run(self, candidate: Any, verb: str, texts: list[str], kwargs: dict[str, str]) -> list[np.ndarray]:
        key = (verb, tuple(sorted(kwargs.items())))
        if key not in self._candidate:
            self._candidate[key] = getattr(candidate, verb)(texts, batch_size=BATCH_SIZE, **kwargs)
        return self._candidate[key]


def _multi_vector_reference(reference: ReferenceRuns, verb: str, texts: list[str],
                            kwargs: dict[str, str]) -> list[np.ndarray]:
    return _matrices(reference(verb, texts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False,
                               **kwargs))


def _matrices(outputs: Any) -> list[np.ndarray]:
    return [np.asarray(o, dtype=np.float32) for o in outputs]


def _count_problems(ref: list[np.ndarray], cand: list[np.ndarray]) -> list[str]:
    """Each text must keep the tokens the reference keeps: a count that differs is a masking or
    tokenization mismatch, which no threshold excuses."""
    if len(ref) != len(cand):
        return [f"token_embeddings: {len(cand)} texts' matrices, the reference has {len(ref)}"]
    differ = [(i, len(c), len(r)) for i, (r, c) in enumerate(zip(ref, cand, strict=True)) if len(r) != len(c)]
    if not differ:
        return []
    shown = ", ".join(f"text {i}: {c} tokens, reference {r}" for i, c, r in differ[:3])
    return [f"kept tokens: {len(differ)} of {len(ref)} texts keep another number of tokens than the reference "
            f"({shown}{', ...' if len(differ) > 3 else ''})"]


def _worst(texts: list[str], cosine: np.ndarray) -> list[dict]:
    return [{"text": texts[i][:200], "cosine": float(cosine[i])} for i in np.argsort(cosine)[:3]]


def _shape_problems(name: str, ref: np.ndarray, cand: np.ndarray) -> list[str]:
    if ref.shape != cand.shape:
        return [f"{name}: candidate shape {cand.shape} != reference shape {ref.shape}"]
    if not np.all(np.isfinite(cand)):
        return [f"{name}: candidate has non-finite values"]
    return []


def _token_min_cosine(reference: ReferenceRuns, candidate: Any, call: ParityCall, texts: list[str],
                      problems: list[str]) -> float:
    ref = _token_reference(reference, call, texts)
    cand = getattr(candidate, call.verb_name)(texts, batch_size=BATCH_SIZE, output_value="token_embeddings",
                                              **call.kwargs)
    if len(ref) != len(cand):
        problems.append(f"token_embeddings: {len(cand)} texts' matrices, the reference has {len(ref)}")
        return float("nan")
    worst = 1.0
    for i, (r, c) in enumerate(zip(ref, cand, strict=True)):
        r = r.detach().cpu().numpy() if hasattr(r, "detach") else np.asarray(r)
        found = _shape_problems(f"token_embeddings[{i}]", r, np.asarray(c))
        if found:
            problems.extend(found)
            continue
        worst = min(worst, float(np.min(row_cosine(r, c))))
    return worst


def _token_reference(reference: ReferenceRuns, call: ParityCall, texts: list[str]) -> Any:
    return reference(call.verb_name, texts, batch_size=BATCH_SIZE, output_value="token_embeddings",
                     show_progress_bar=False, **call.kwargs)
