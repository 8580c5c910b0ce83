"""``packager bench`` through the CLI on tiny artifacts: a row per target from fresh worker
processes, the torch reference and the agreement with it, and typed errors for bad input."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from packager.bench.run import Settings, Target, measure
from packager.cli import main
from packager.errors import MissingDependencyError, PackagerError
from packager.runtime.enums import ChainKind
from packager.validators.texts import real_sentences

TEXTS = list(real_sentences()[:24])
FIGURES = ("inputs_per_second", "latency_p50_ms", "latency_p99_ms", "cold_start_s", "peak_rss_mb")
FAST = ["--rounds", "1", "-q"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory, tiny_chains) -> Path:
    """A dense chain as ONNX and OpenVINO, and a cross-encoder as ONNX, built once for this module."""
    out = tmp_path_factory.mktemp("bench-dist")
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "--format", "onnx,openvino", "-q"]) == 0
    assert main(["build", str(tiny_chains["ce-sigmoid"]), "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS), encoding="utf-8")
    return path


def _rows(capsys, *argv: str) -> list[dict]:
    assert main(["bench", *argv, "--json", *FAST]) == 0
    return json.loads(capsys.readouterr().out)


def _check_figures(row: dict) -> None:
    for key in FIGURES:
        assert math.isfinite(row[key]) and row[key] > 0, (row["name"], key, row[key])


def test_a_row_per_artifact_in_the_table(dist, texts, capsys):
    artifacts = [dist / "mean-onnx-fp32", dist / "mean-openvino-fp32"]
    assert main(["bench", *map(str, artifacts), "--texts", str(texts), *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| variant | inputs/s | p50 ms | p99 ms | cold s | peak RSS MB | graph MB |"
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| mean-onnx-fp32", "| mean-openvino-fp32"]
    assert f"{len(TEXTS)} inputs, batches of 32, 2 threads" in lines[5]
    assert lines[6].startswith("host: ") and "CPUs (" in lines[6], lines[6]
    rows = _rows(capsys, *map(str, artifacts), "--texts", str(texts), "--batch-size", "8", "--threads", "1")
    assert [r["name"] for r in rows] == ["mean-onnx-fp32", "mean-openvino-fp32"]
    for row in rows:
        _check_figures(row)
        assert row["inputs"] == len(TEXTS) and row["graph_mb"] > 0 and "min_cosine" not in row


def test_fp32_artifact_agrees_with_its_own_source(dist, texts, tiny_chains, capsys):
    reference, artifact = _rows(capsys, str(dist / "mean-onnx-fp32"), "--texts", str(texts),
                                "--reference", str(tiny_chains["mean"]))
    assert reference["mode"] == "reference" and reference["graph_mb"] is None and reference["x_ref"] == 1.0
    _check_figures(reference)
    _check_figures(artifact)
    assert artifact["x_ref"] > 0
    # The torch-free worker's own memory, not its parent's: this test process holds torch.
    assert artifact["peak_rss_mb"] < reference["peak_rss_mb"] / 2
    assert artifact["min_cosine"] > 0.99999 and artifact["mean_cosine"] > 0.99999


def test_cross_encoder_scores_against_its_source(dist, tmp_path, tiny_chains, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(f"{TEXTS[0]}\t{document}" for document in TEXTS[1:]), encoding="utf-8")
    _, artifact = _rows(capsys, str(dist / "ce-sigmoid-onnx-fp32"), "--texts", str(pairs),
                        "--reference", str(tiny_chains["ce-sigmoid"]))
    assert artifact["inputs"] == len(TEXTS) - 1
    _check_figures(artifact)
    assert artifact["max_abs_diff"] < 1e-4 and artifact["spearman"] > 0.99
    assert "min_cosine" not in artifact


def test_default_inputs_are_pairs_for_a_cross_encoder(dist, capsys):
    (row,) = _rows(capsys, str(dist / "ce-sigmoid-onnx-fp32"))
    assert row["inputs"] == 192
    _check_figures(row)


@pytest.mark.parametrize("case,code", [
    ("not-an-artifact", 8), ("tampered", 8), ("empty-texts", 2), ("missing-texts", 2), ("bad-rounds", 2),
    ("mixed-kinds", 2), ("reference-of-another-kind", 2), ("missing-reference", 3),
])
def test_bad_input_is_a_typed_error(case, code, dist, tiny_chains, tmp_path, capsys):
    artifact, extra = dist / "mean-onnx-fp32", []
    if case == "not-an-artifact":
        artifact = tiny_chains["mean"]
    elif case == "tampered":
        artifact = Path(shutil.copytree(artifact, tmp_path / artifact.name))
        with open(artifact / "tokenizer.json", "a") as f:
            f.write(" ")
    elif case in ("empty-texts", "missing-texts"):
        (tmp_path / "empty.txt").write_text("\n \n")
        extra = ["--texts", str(tmp_path / ("empty.txt" if case == "empty-texts" else "nowhere.txt"))]
    elif case == "bad-rounds":
        extra = ["--rounds", "0"]
    elif case == "mixed-kinds":
        extra = [str(dist / "ce-sigmoid-onnx-fp32")]
    elif case == "reference-of-another-kind":
        extra = ["--reference", str(tiny_chains["ce-sigmoid"])]
    elif case == "missing-reference":
        extra = ["--reference", str(tmp_path / "nowhere")]
    assert main(["bench", str(artifact), *extra, "-q"]) == code
    captured = capsys.readouterr()
    assert captured.err.startswith("packager: error: ") and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("exit_code,error", [(9, MissingDependencyError), (1, PackagerError)])
def test_a_failed_worker_names_its_target_and_last_words(exit_code, error, tmp_path):
    # A stand-in worker that fails the way a real one does: a line on stderr, then an exit code.
    failing = (sys.executable, "-c", f"import sys; print('noise\\nlast words', file=sys.stderr); sys.exit({exit_code})")
    target = Target(name="the-target", mode="artifact", path=str(tmp_path), kind=ChainKind.SENTENCE_TRANSFORMER,
                    command=failing)
    with pytest.raises(error) as raised:
        measure([target], TEXTS, Settings(rounds=1))
    assert type(raised.value) is error and raised.value.exit_code == exit_code
    assert "the-target" in str(raised.value) and str(raised.value).endswith(": last words")
