"""The runtime loader: integrity checks, encode behaviour, threads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from canaries import CANARY_ENV, edit_loader, plant_pyc
from packager.cli import main
from packager.publish import seal
from packager.runtime import ArtifactIntegrityError, InvalidInputError, load
from packager.runtime.manifest import read_manifest
from packager.validators.texts import real_sentences


@pytest.fixture(scope="module")
def model(tiny_artifacts):
    return load(tiny_artifacts["mean"])


def test_tampered_graph_byte_is_refused(copy_artifact):
    artifact = copy_artifact()
    graph = artifact / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx: sha256 does not match"):
        load(artifact)


@pytest.mark.parametrize("tamper,match", [
    (lambda a: (a / "tokenizer.json").write_text((a / "tokenizer.json").read_text().replace("[UNK]", "[UNX]")),
     "tokenizer.json: sha256 does not match"),
    (lambda a: (a / "extra.py").write_text("print('hi')"), "extra.py: not listed"),
    (lambda a: (a / "parity.json").unlink(), "parity.json: missing"),
    (lambda a: (a / "loader" / "model.py").write_text("raise SystemExit"), "loader/model.py"),
])
def test_tampered_artifacts_are_refused(copy_artifact, tamper, match):
    artifact = copy_artifact()
    tamper(artifact)
    with pytest.raises(ArtifactIntegrityError, match=match):
        load(artifact)


def test_every_problem_is_listed_at_once(copy_artifact):
    artifact = copy_artifact()
    (artifact / "parity.json").unlink()
    (artifact / "README.md").write_text("changed")
    with pytest.raises(ArtifactIntegrityError) as error:
        load(artifact)
    assert "parity.json: missing" in str(error.value) and "README.md: size" in str(error.value)


def test_importing_the_loader_writes_no_bytecode_into_the_artifact(copy_artifact, tmp_path):
    """The documented `from loader import load`, twice: Python can write no cache next to the
    loader (its __pycache__ is a listed file), so the second load verifies as the first did."""
    artifact = copy_artifact()
    code = f"import sys; sys.path.insert(0, {str(artifact)!r}); from loader import load; load({str(artifact)!r})"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert (artifact / "loader" / "__pycache__").is_file() and (artifact / "loader" / "chat" / "__pycache__").is_file()
    assert not [p for p in artifact.rglob("*.pyc")]


TAMPERING = {"planted bytecode": (plant_pyc, "planted bytecode ran", "not listed in the manifest"),
             "an edited loader module": (edit_loader, "edited loader code ran", "loader/model.py: size")}


@pytest.mark.parametrize("tampering", TAMPERING)
def test_the_tampering_runs_at_a_plain_import_of_the_artifacts_loader(copy_artifact, tmp_path, tampering):
    """The control for the tests below: planted bytecode and an edited module are working
    attacks on the bare ``from loader import load``, which runs the artifact's code before it
    can check anything: code cannot vouch for itself (see the README's Safety)."""
    tamper, ran, _ = TAMPERING[tampering]
    artifact = copy_artifact()
    tamper(artifact, "model")
    code = f"import sys; sys.path.insert(0, {str(artifact)!r}); from loader import load"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                   env={**os.environ, CANARY_ENV: str(tmp_path / "canary")})
    assert (tmp_path / "canary").read_text() == ran


@pytest.mark.parametrize("tampering", TAMPERING)
def test_the_tampering_is_refused_before_anything_runs(copy_artifact, tmp_path, monkeypatch, tampering):
    """``packager.runtime.load`` and the CLI's ``import_loader`` verify with the installed
    runtime first."""
    from packager.publish import import_loader

    tamper, _, refused = TAMPERING[tampering]
    artifact = copy_artifact()
    tamper(artifact, "model")
    monkeypatch.setenv(CANARY_ENV, str(tmp_path / "canary"))
    for attempt in (load, import_loader):
        with pytest.raises(ArtifactIntegrityError, match=refused):
            attempt(artifact)
    assert not (tmp_path / "canary").exists()


def _tampered(artifact: Path) -> Path:
    """Planted bytecode and an edited loader module, the package's ``__init__`` included."""
    plant_pyc(artifact, "model")
    edit_loader(artifact, "__init__")
    edit_loader(artifact, "load")
    return artifact


def test_load_runs_no_artifact_code_even_from_a_resealed_copy(copy_artifact, tmp_path, monkeypatch):
    """``packager.runtime.load`` never imports the artifact's loader: even a copy whose
    manifest was rewritten to list the planted code loads on the installed runtime, and nothing
    planted runs; pinned to the original manifest's digest, that copy is refused."""
    artifact = copy_artifact()
    original = read_manifest(artifact)
    pinned = hashlib.sha256((artifact / "manifest.json").read_bytes()).hexdigest()
    seal(_tampered(artifact), original)
    monkeypatch.setenv(CANARY_ENV, str(tmp_path / "canary"))
    assert load(artifact).encode(["a text"]).shape == (1, 32)  # its own (resealed) manifest holds
    with pytest.raises(ArtifactIntegrityError, match=f"sha256 [0-9a-f]{{64}} is not the pinned {pinned}"):
        load(artifact, sha256=pinned)
    assert not (tmp_path / "canary").exists()


def test_a_copy_loads_pinned_to_the_digest_inspect_prints(copy_artifact, capsys):
    artifact = copy_artifact()
    assert main(["inspect", str(artifact)]) == 0
    shown = re.search(r"^manifest sha256: ([0-9a-f]{64}) ", capsys.readouterr().out, re.M)
    assert shown and shown[1] == hashlib.sha256((artifact / "manifest.json").read_bytes()).hexdigest()
    assert load(artifact, sha256=shown[1]).encode("a text").shape == (32,)
    assert main(["inspect", str(artifact), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest_sha256"] == shown[1]
    for bad in (shown[1].upper(), shown[1][:63], 5):
        with pytest.raises(InvalidInputError, match="64 lowercase hex digits"):
            load(artifact, sha256=bad)


def test_encode_shapes_types_and_order(model):
    texts = list(real_sentences()[:40])
    embeddings = model.encode(texts, batch_size=7)
    assert embeddings.shape == (40, 32) and embeddings.dtype == np.float32
    one_by_one = np.stack([model.encode(t) for t in texts])
    np.testing.assert_allclose(embeddings, one_by_one, atol=1e-5)
    assert model.encode(texts[3]).shape == (32,)


def test_encode_empty_list_and_normalize(model):
    assert model.encode([]).shape == (0, 32)
    unit = model.encode(["a text", "another text"], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)


def test_over_long_text_is_truncated_not_rejected(model):
    long = " ".join(real_sentences()[:200])
    prefix = long[: len(long) // 3]
    # Both exceed max_length (48 tokens), so both are cut to the same first 48 tokens.
    np.testing.assert_allclose(model.encode(long), model.encode(prefix), atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (["ok", 3], "item 1 is int"),
    (["ok", None], "item 1 is NoneType"),
    (None, "got NoneType"),
    (42, "got int"),
    (b"bytes", "got bytes"),
])
def test_non_string_inputs_are_rejected_clearly(model, bad, match):
    with pytest.raises(InvalidInputError, match=match):
        model.encode(bad)


def test_bad_options_are_rejected_clearly(model):
    with pytest.raises(InvalidInputError, match="batch_size"):
        model.encode(["x"], batch_size=0)
    with pytest.raises(InvalidInputError, match="token_embeddings"):
        model.encode(["x"], output_value="token_embeddings")
    with pytest.raises(InvalidInputError, match="prompt_name 'nope'"):
        model.encode(["x"], prompt_name="nope")


def test_prompts_are_prepended(model):
    np.testing.assert_allclose(model.encode("query: where"), model.encode("where", prompt="query: "), atol=1e-6)


def test_loader_reads_settings_from_the_manifest_only(copy_artifact):
    """The tokenizer file's own truncation/padding sections are ignored: the manifest rules."""
    artifact = copy_artifact()
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["routes"][0]["tokenizer"]["max_length"] == 48
    tokenizer = json.loads((artifact / "tokenizer.json").read_text())
    assert tokenizer["truncation"] is None and tokenizer["padding"] is None


def test_batches_are_bounded_in_inputs_and_padded_tokens(monkeypatch):
    from packager.runtime import batching
    from packager.runtime.batching import batches

    max_batch_tokens = 1024  # the lengths below are chosen around this budget
    monkeypatch.setattr(batching, "MAX_BATCH_TOKENS", max_batch_tokens)
    lengths = [5000, 300, 256, 256, 100, 100, 50, 10, 10, 10, 10, 3]  # longest first, as the runner sorts
    order = list(range(len(lengths)))
    plain = list(batches(order, lengths, 4))
    assert [i for batch, _, _ in plain for i in batch] == order  # every input once, in order
    assert plain[0] == ([0], 5000, 1)  # one text longer than the budget still runs, alone
    for batch, width, rows in plain:
        assert 1 <= len(batch) == rows <= 4 and width == lengths[batch[0]]  # padded to its longest, as is
        assert len(batch) == 1 or len(batch) * width <= max_batch_tokens
    assert plain[-1][0] == [8, 9, 10, 11]  # short texts fill the batch size


def test_bucketed_batches_come_in_few_shapes():
    from packager.runtime.batching import MAX_BATCH_TOKENS, batches, bucket_rows, bucket_width

    limit = 256
    lengths = sorted(((i * 37) % limit + 1 for i in range(1000)), reverse=True)  # every length 1..256
    order = list(range(len(lengths)))
    shapes = set()
    for one in order:  # batch-1 calls
        (batch, width, rows), = batches([one], lengths, 1, bucket_limit=limit)
        assert batch == [one] and rows == 1 and 0 <= width - lengths[one] < max(8, lengths[one] / 4)
        shapes.add((rows, width))
    assert sorted({width for _, width in shapes}) == [*range(8, 65, 8), *range(80, 129, 16), *range(160, 257, 32)]
    for size in (7, 32):  # the whole list, then a short tail
        for take in (order, order[-13:]):
            seen = list(batches(take, lengths, size, bucket_limit=limit))
            assert [i for batch, _, _ in seen for i in batch] == take
            for batch, width, rows in seen:
                full = min(size, max(1, MAX_BATCH_TOKENS // width))  # the budget's rows at this width
                assert len(batch) <= rows and (rows == full or (rows < full and rows == bucket_rows(rows)))
                assert max(lengths[i] for i in batch) <= width == bucket_width(width)
                shapes.add((rows, width))
    assert len(shapes) < 64  # against 256 widths x up to 32 row counts unbucketed
    assert [bucket_rows(n) for n in range(1, 34)] == [1, 2, 3, 4, 6, 6, 8, 8, *[12] * 4, *[16] * 4, *[24] * 8,
                                                     *[32] * 8, 48]
    # never wider than the route's max length unless the input already is
    assert next(batches([0], [20], 1, bucket_limit=20))[1] == 20
    assert next(batches([0], [30], 1, bucket_limit=20))[1] == 30


BUCKETED_CALLS = {  # a call per output kind: pooled, tokens with a scoring mask and query expansion, pair scores
    "mean": lambda m, texts: m.encode(texts, batch_size=8),
    "mv-expansion": lambda m, texts: [*m.encode_query(texts, batch_size=8), *m.encode_document(texts, batch_size=8)],
    "ce-sigmoid": lambda m, texts: m.predict([(t, "a") for t in texts], batch_size=8),
}


@pytest.mark.parametrize("chain", BUCKETED_CALLS)
def test_bucketed_shapes_change_no_output(tiny_artifacts, monkeypatch, chain):
    """What a session that compiles per shape (OpenVINO) is given, run here through onnxruntime:
    wider padding and filler rows, none of which may reach the outputs."""
    from packager.runtime.backends import OnnxSession
    from packager.runtime.batching import bucket_width

    texts = [*real_sentences()[:18], "", "a", real_sentences()[40] * 3]  # 21: 8 + 8 + 5 run as 6
    call = BUCKETED_CALLS[chain]
    want = call(load(tiny_artifacts[chain]), texts)
    shapes = []
    run = OnnxSession.run
    monkeypatch.setattr(OnnxSession, "compiles_per_shape", True)
    monkeypatch.setattr(OnnxSession, "run", lambda self, feeds: (shapes.append(feeds["input_ids"].shape),
                                                                 run(self, feeds))[1])
    got = call(load(tiny_artifacts[chain]), texts)
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert np.shape(a) == np.shape(b) and np.allclose(a, b, atol=1e-5)
    assert all(width == bucket_width(width) for _, width in shapes if chain != "mv-expansion")  # (its queries'
    # fixed expansion length is a width of its own)
    assert sum(rows for rows, _ in shapes) > len(texts) * (len(got) // len(texts))  # filler rows ran


def test_an_edited_manifest_is_refused(copy_artifact):
    artifact = copy_artifact()
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["routes"][0]["tokenizer"]["max_length"] = 8  # every digest still holds
    (artifact / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with pytest.raises(ArtifactIntegrityError, match=r"manifest\.json: changed after it was sealed"):
        load(artifact)


def _reseal(artifact: Path) -> None:
    """Record the current files in the manifest, as someone forging an artifact would."""
    from packager.publish import seal
    from packager.runtime.manifest import read_manifest

    seal(artifact, read_manifest(artifact))


def test_onnx_external_data_outside_the_artifact_is_refused(copy_artifact, tmp_path):
    import onnx

    artifact = copy_artifact()
    graph = onnx.load(artifact / "model.onnx", load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    (artifact / "model.onnx.data").rename(tmp_path / "outside.data")
    onnx.save(graph, artifact / "model.onnx")
    _reseal(artifact)
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx: the onnx runtime refused this graph.*escapes"):
        load(artifact)


def test_openvino_weights_that_do_not_match_the_graph_are_refused(tmp_path, tiny_openvino):
    artifact = Path(shutil.copytree(tiny_openvino["mean"], tmp_path / "ov"))
    weights = artifact / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactIntegrityError, match=r"model\.bin: size"):
        load(artifact)
    _reseal(artifact)
    with pytest.raises(ArtifactIntegrityError, match=r"model\.xml: the openvino runtime refused this graph"):
        load(artifact)
