"""A registered version of every chain kind behind a real ``mlflow models serve`` (a torch-free
environment with only the runtime and mlflow, ``--env-manager local``, on loopback), asked by a
real HTTP client: the payload shapes MLflow documents answer with the loader's numbers, and every
bad payload gets HTTP 400 with a one-line reason, never a 500 or a wrong answer."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from conftest import sparse_rows
from mlflow_servers import gateway, mlflow_server, model_server
from packager.cli import main
from packager.registry.store import CANDIDATE_ALIAS
from packager.runtime import load
from packager.validators.texts import real_sentences

pytestmark = pytest.mark.slow

TEXTS = list(real_sentences()[-69:-64])
PAIRS = [[TEXTS[0], TEXTS[1]], [TEXTS[2], TEXTS[3]], [TEXTS[4], TEXTS[0]]]
KINDS = ("mean", "ce-sigmoid", "splade-max", "mv-skiplist", "clip")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("serving-registry")) as url:
        yield url


@pytest.fixture(scope="module", params=KINDS)
def served(request, registry, tiny_artifacts, serving_python, tmp_path_factory):
    """(the loader, the URL of ``mlflow models serve`` of the same artifact's champion version)."""
    name, artifact = request.param, tiny_artifacts[request.param]
    uri = ["--tracking-uri", registry]
    assert main(["register", str(artifact), "--name", name, "-q", *uri]) == 0
    assert main(["promote", name, "--from-alias", CANDIDATE_ALIAS, "--alias", "champion", "-q", *uri]) == 0
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with model_server(serving_python, f"models:/{name}@champion", registry, log) as url:
        yield load(artifact), url


def _post(url: str, payload: Any) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _predictions(url: str, payload: Any) -> Any:
    status, body = _post(url, payload)
    assert status == 200, (payload, status, body)
    return body["predictions"]


def _image_base64() -> str:
    """A real image (matplotlib's sample photograph) as a JSON request sends it: PNG, base64."""
    from packager.validators.image_samples import real_images

    image = next(iter(real_images().values())).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_documented_payloads_answer_with_the_loaders_numbers(served):
    model, url = served
    if model.manifest.chain_kind.value == "CrossEncoder":
        _pairs_answer_with_the_loaders_scores(model, url)
    else:
        _texts_answer_with_the_loaders_embeddings(model, url)


def _pairs_answer_with_the_loaders_scores(model: Any, url: str) -> None:
    want = model.predict([tuple(p) for p in PAIRS])
    for payload in ({"inputs": PAIRS},
                    {"dataframe_split": {"columns": ["query", "document"], "data": PAIRS}},
                    {"dataframe_records": [{"query": q, "document": d} for q, d in PAIRS]},
                    {"inputs": {"query": [q for q, _ in PAIRS], "document": [d for _, d in PAIRS]}}):
        np.testing.assert_allclose(_predictions(url, payload), want, atol=1e-5, err_msg=str(payload)[:80])
    assert _predictions(url, {"inputs": []}) == []


def _texts_answer_with_the_loaders_embeddings(model: Any, url: str) -> None:
    kind = model.manifest.chain_kind.value
    for payload in ({"inputs": TEXTS}, {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
                    {"dataframe_records": [{"text": t} for t in TEXTS]}):
        _same_rows(kind, _predictions(url, payload), model.encode(TEXTS), str(payload)[:80])
    for verb in ("encode_query", "encode_document"):
        got = _predictions(url, {"inputs": TEXTS[:2], "params": {"verb": verb, "batch_size": 1}})
        _same_rows(kind, got, getattr(model, verb)(TEXTS[:2]), verb)
    if kind in ("SentenceTransformer", "MultiVectorEncoder"):
        images = model.manifest.verbs["encode"].image_route is not None
        if kind == "SentenceTransformer":  # OpenAI's name for it (this chain has no Normalize: not renormalized)
            got = _predictions(url, {"inputs": TEXTS, "params": {"dimensions": 4}})
            _same_rows(kind, got, model.encode(TEXTS, truncate_dim=4), "dimensions")
        for precision in ("int8", "ubinary"):
            if precision == "int8" and images:  # its recorded ranges are of texts only: ranges= is the loader's
                assert _post(url, {"inputs": TEXTS, "params": {"precision": precision}})[0] == 400
                continue
            got = _predictions(url, {"inputs": TEXTS, "params": {"precision": precision}})
            _same_rows(kind, got, model.encode(TEXTS, precision=precision), precision)  # integer codes: within 1e-5
        if images:  # texts and images, one per row
            image = _image_base64()
            got = _predictions(url, {"dataframe_records": [{"text": TEXTS[0]}, {"image": image}]})
            want = model.encode([TEXTS[0], base64.b64decode(image)])
            np.testing.assert_allclose(got, want, atol=1e-5)
    empty = _predictions(url, {"inputs": []})
    assert empty == [] or np.asarray(empty).size == 0


def _same_rows(kind: str, got: Any, want: Any, what: str) -> None:
    if kind == "MultiVectorEncoder":  # one [tokens, dim] list per text
        assert [np.asarray(g).shape for g in got] == [w.shape for w in want], what
        got, want = np.concatenate(got), np.concatenate(want)
    elif kind == "SparseEncoder":  # {"indices": [...], "values": [...]} per text
        got = sparse_rows(((r["indices"], r["values"]) for r in got), want.dimension)
        want = want.toarray()
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=what)


EMBEDDER_GARBAGE = {
    "numbers": {"inputs": [1, 2]},
    "a null among texts": {"inputs": ["a", None]},
    "nested lists": {"inputs": [["nested"]]},
    "a number in a frame": {"dataframe_records": [{"text": 5}]},
    "a null in a frame": {"dataframe_split": {"columns": ["text"], "data": [[None]]}},
    "an unknown verb": {"inputs": ["a"], "params": {"verb": "nope"}},
    "a verb of another kind": {"inputs": ["a"], "params": {"verb": "predict"}},
    "an option of the wrong type": {"inputs": ["a"], "params": {"batch_size": "many"}},
    "a batch size of zero": {"inputs": ["a"], "params": {"batch_size": 0}},
    "not JSON": b"{not json",
}
CROSS_ENCODER_GARBAGE = {
    "numbers": {"inputs": [1, 2]},
    "a pair of three": {"inputs": [["q", "d", "x"]]},
    "a pair of one": {"inputs": [["q"]]},
    "a null document": {"dataframe_split": {"columns": ["query", "document"], "data": [["q", None]]}},
    "a number in a column": {"inputs": {"query": ["q"], "document": [3]}},
    "columns of two lengths": {"inputs": {"query": ["q", "r"], "document": ["d"]}},
    "one text": {"inputs": ["just a query"]},
    "three columns": {"dataframe_split": {"columns": ["a", "b", "c"], "data": [["q", "d", "e"]]}},
    "an option of the wrong type": {"inputs": PAIRS[:1], "params": {"batch_size": "many"}},
    "not JSON": b"{not json",
}


# Refused by MLflow's server before the model sees them, in MLflow's words (several lines, the
# input quoted back).
MLFLOW_REFUSES = {"not JSON", "an option of the wrong type"}


def test_bad_payloads_get_400_with_a_one_line_reason(served):
    model, url = served
    kind = model.manifest.chain_kind.value
    garbage = dict(CROSS_ENCODER_GARBAGE if kind == "CrossEncoder" else EMBEDDER_GARBAGE)
    if kind == "SentenceTransformer":
        garbage["an unknown precision"] = {"inputs": ["a"], "params": {"precision": "int4"}}
        garbage["dimensions and truncate_dim apart"] = {"inputs": ["a"], "params": {"dimensions": 4, "truncate_dim": 8}}
        garbage["dimensions past the width"] = {"inputs": ["a"], "params": {"dimensions": 10_000}}
    for name, payload in garbage.items():
        status, body = _post(url, payload)
        assert status == 400 and "Traceback" not in body["message"], (name, status, body)
        if name not in MLFLOW_REFUSES:  # the model's own reason, after MLflow's "Failed to predict data '...'."
            reason = body["message"].rsplit("Error: ", 1)[-1].strip()
            assert reason and "\n" not in reason, (name, body)
    # and the server still answers good requests
    assert len(_predictions(url, {"inputs": PAIRS if kind == "CrossEncoder" else TEXTS[:1]})) in (1, 3)


@pytest.fixture(scope="module")
def openai_client(registry, tiny_artifacts, serving_python, tmp_path_factory):
    """(the loader, an ``openai.OpenAI`` client of MLflow's AI Gateway, whose embeddings endpoint
    ``my-embedder`` is the ``mlflow-model-serving`` provider in front of ``mlflow models serve`` of
    the embedder's registered version)."""
    from openai import OpenAI

    artifact, uri = tiny_artifacts["mean-normalize"], ["--tracking-uri", registry]
    assert main(["register", str(artifact), "--name", "my-embedder", "-q", *uri]) == 0
    root = tmp_path_factory.mktemp("gateway")
    with model_server(serving_python, "models:/my-embedder/1", registry, root / "serve.log") as served, \
            gateway({"my-embedder": served}, root) as url:
        yield load(artifact), OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_openai_client_embeds_through_mlflows_gateway_as_the_loader_does(openai_client):
    import openai

    model, client = openai_client
    answer = client.embeddings.create(model="my-embedder", input=TEXTS)
    assert [d.index for d in answer.data] == list(range(len(TEXTS))) and answer.model == "my-embedder"
    np.testing.assert_allclose([d.embedding for d in answer.data], model.encode(TEXTS), atol=1e-5)
    # one string; floats asked for by name (the client's default asks for base64, and decodes only strings)
    answer = client.embeddings.create(model="my-embedder", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in answer.data], model.encode(TEXTS[:1]), atol=1e-5)
    # dimensions: the first 3 of them, unit vectors again as this chain's own are (it ends in Normalize)
    answer = client.embeddings.create(model="my-embedder", input=TEXTS[:2], dimensions=3)
    got = np.array([d.embedding for d in answer.data])
    np.testing.assert_allclose(got, model.encode(TEXTS[:2], truncate_dim=3, normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    with pytest.raises(openai.BadRequestError):  # wider than the model: refused, not the full width
        client.embeddings.create(model="my-embedder", input=TEXTS[:1], dimensions=10_000)
    # token ids (OpenAI's other input form) are not texts: refused, as sentence-transformers would
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="my-embedder", input=[[101, 2023, 102]])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="my-embedder", input=TEXTS[:1], dimensions=0)
    # MLflow's gateway answers an endpoint it does not have with 500, not 404 (its "Invalid endpoint /
    # route name" is not mapped to a status): docs/guides/serving.md says so, and this fails if it changes
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="no-such-endpoint", input=TEXTS[:1])
