"""Forged manifests and bad calls: each is a typed error with its exit code and a one-line cause,
never a traceback from numpy, tokenizers or the JSON parser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from packager.cli import main
from packager.runtime import ArtifactIntegrityError, InvalidInputError, load


@pytest.fixture(scope="module")
def model(tiny_artifacts):
    return load(tiny_artifacts["mean"])


def _reseal(artifact: Path) -> None:
    """Record the current files in the manifest, as someone forging an artifact would."""
    from packager.publish import seal
    from packager.runtime.manifest import read_manifest

    seal(artifact, read_manifest(artifact))


def _edit_manifest(artifact: Path, edit) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    edit(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


def _raw(artifact: Path, old: str, new: str) -> None:
    text = (artifact / "manifest.json").read_text()
    assert old in text
    (artifact / "manifest.json").write_text(text.replace(old, new, 1))


FORGERIES = {
    "a 5000-digit number": (lambda a: _raw(a, '"schema_version": 6', '"schema_version": ' + "9" * 5000),
                            "not valid JSON"),
    "one 0xFF byte": (lambda a: (a / "manifest.json").write_bytes((a / "manifest.json").read_bytes() + b"\xff"),
                      "not UTF-8"),
    "max_length of 2**70": (lambda a: _edit_manifest(a, lambda m: m["routes"][0]["tokenizer"].update(max_length=2**70)),
                            "out of range"),
    "max_length of 2**40": (lambda a: _edit_manifest(a, lambda m: m["routes"][0]["tokenizer"].update(max_length=2**40)),
                            "max_length must be in"),
    "a negative pad id": (lambda a: _edit_manifest(a, lambda m: m["routes"][0]["tokenizer"].update(pad_id=-1)),
                          "token ids must be in"),
    "nested beyond reason": (lambda a: (a / "manifest.json").write_text("[" * 100_000 + "]" * 100_000),
                             "not valid JSON"),
    "not an object": (lambda a: (a / "manifest.json").write_text("[]"), "top level must be an object"),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_manifest_is_an_integrity_error(forgery, copy_artifact, capsys):
    artifact = copy_artifact()
    forge, message = FORGERIES[forgery]
    forge(artifact)
    with pytest.raises(ArtifactIntegrityError, match=message):
        load(artifact)
    assert main(["inspect", str(artifact)]) == 8
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "Traceback" not in err and message.split()[0] in err


def test_a_resealed_tokenizer_that_is_not_a_tokenizer_is_an_integrity_error(copy_artifact):
    artifact = copy_artifact()
    (artifact / "tokenizer.json").write_text('{"model": {"type": "Nothing"}}')
    _reseal(artifact)
    with pytest.raises(ArtifactIntegrityError, match=r"tokenizer\.json: not a tokenizer"):
        load(artifact)


BAD_CALLS = {
    "prompt=5": (lambda m: m.encode("x", prompt=5), "prompt must be a string"),
    "prompt_name=[x]": (lambda m: m.encode("x", prompt_name=["x"]), "prompt_name must be a string"),
    "similarity of texts": (lambda m: m.similarity("a", "b"), "not text"),
    "similarity of words": (lambda m: m.similarity([[1.0, 2.0]], [["a", "b"]]), "arrays of numbers"),
    "batch_size='3'": (lambda m: m.encode(["a"], batch_size="3"), "batch_size"),
    "truncate_dim=0": (lambda m: m.encode("a", truncate_dim=0), "truncate_dim"),
    "a lone surrogate prompt": (lambda m: m.encode("a", prompt="\udcff"), "not valid Unicode"),
    "a text of None": (lambda m: m.encode(["a", None]), "item 1 is NoneType"),
    "a nested list": (lambda m: m.encode([["a"]]), "item 0 is list"),
}


@pytest.mark.parametrize("call", BAD_CALLS)
def test_a_bad_call_is_an_invalid_input_error(call, model):
    run, message = BAD_CALLS[call]
    with pytest.raises(InvalidInputError, match=message):
        run(model)


def test_bad_cross_encoder_calls_are_invalid_input_errors(tiny_artifacts):
    model = load(tiny_artifacts["ce-sigmoid"])
    for run, message in [(lambda: model.predict([("a", "b")], activation_fn=5), "activation_fn"),
                         (lambda: model.rank("q", ["d"], top_k="2"), "top_k"),
                         (lambda: model.predict([("a", "b", "c")]), "pairs of two strings"),
                         (lambda: model.predict([("a", 1)]), "pairs of two strings")]:
        with pytest.raises(InvalidInputError, match=message):
            run()
    assert np.isfinite(model.predict([("a", "b")])).all()  # the model still answers good calls
