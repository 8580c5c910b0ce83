"""The whole path through the CLI on tiny chains: build, parity gate, artifact, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from packager.builder import BuildOptions, build
from packager.cli import main
from packager.errors import ParityError, RegistryError
from packager.exporters import Registry
from packager.exporters.onnx import OnnxFp32
from packager.registry import open_store
from packager.runtime.manifest import read_manifest
from packager.validators.texts import real_sentences

# Texts the parity gate did not see: the loader must agree with sentence-transformers on them too.
UNSEEN = [s.upper() for s in real_sentences()[-40:]]


def test_build_report_and_validation_data(tmp_path, tiny_chains):
    def build(*extra):
        reports = tmp_path / "reports"
        assert main(["build", str(tiny_chains["cls-dense"]), "--out", str(tmp_path / "dist"), "--reports", str(reports),
                     "-q", *extra]) == 0
        return json.loads((reports / "report.json").read_text())

    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps({"text": t}) for t in UNSEEN[:5]))
    result = build("--validation-data", str(data))
    assert result["status"] == "ok" and result["exit_code"] == 0
    (variant,) = result["variants"]
    assert variant["format"] == "onnx" and variant["precision"] == "fp32"
    assert Path(variant["artifact"]).name == "cls-dense-onnx-fp32"
    assert variant["parity"]["passed"] and variant["parity"]["inputs"] == build()["variants"][0]["parity"]["inputs"] + 5


class _DriftingTokenizer(OnnxFp32):
    """The fp32 recipe, but the tokenizer it ships no longer lowercases: a candidate whose
    tokenizer drifted from the reference's (the bug the end-to-end gate exists for)."""

    def export(self, graph, dest, *, stem, context):
        from tokenizers import Tokenizer, normalizers

        result = super().export(graph, dest, stem=stem, context=context)
        tokenizer = Tokenizer.from_file(str(dest / context.tokenizer.file))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.save(str(dest / context.tokenizer.file))
        return result


def _build_drifting(chain: Path, out: Path, **options):
    recipes = Registry()
    recipes.register(_DriftingTokenizer())
    return build(str(chain), BuildOptions(out=out, **options), recipes=recipes)


def test_a_drifted_tokenizer_fails_the_gate_and_publishes_nothing(tmp_path, tiny_chains):
    out, registry = tmp_path / "dist", "memory://drifted"
    with pytest.raises(ParityError) as error:
        _build_drifting(tiny_chains["mean"], out, register="tiny", tracking_uri=registry)
    assert error.value.exit_code == 6
    assert [p.name for p in out.iterdir()] == ["mean-report"]  # no artifact, no leftover staging directory
    result = json.loads((out / "mean-report" / "report.json").read_text())
    assert result["status"] == "failed" and result["error"]["type"] == "ParityError" and result["exit_code"] == 6
    (variant,) = result["variants"]
    assert variant["status"] == "failed-gate" and variant["parity"]["passed"] is False
    assert any("min_cosine" in failure for failure in variant["parity"]["failures"])
    with pytest.raises(RegistryError, match="no registered model named 'tiny'"):
        open_store(registry).versions("tiny")


def test_allowed_parity_failure_is_published_and_says_so(tmp_path, tiny_chains):
    _build_drifting(tiny_chains["mean"], tmp_path, allow_parity_failure=True, write_reports=False)
    manifest = read_manifest(tmp_path / "mean-onnx-fp32")
    assert manifest.parity.status.value == "failed-allowed" and manifest.parity.failures


def test_validate_never_runs_a_tampered_loader(copy_artifact, tiny_chains, tmp_path, capsys):
    artifact = copy_artifact("mean")
    ran = tmp_path / "payload-ran"
    with open(artifact / "loader" / "__init__.py", "a") as f:
        f.write(f"\nopen({str(ran)!r}, 'w').close()\n")
    assert main(["validate", str(artifact), "--reference", str(tiny_chains["mean"])]) == 8
    assert not ran.exists()
    assert "loader/__init__.py: s" in capsys.readouterr().err


def test_validate_passes_and_catches_an_edited_manifest(copy_artifact, tiny_chains, tmp_path, capsys):
    from packager.publish import seal
    from packager.runtime.manifest import Manifest

    artifact = copy_artifact("mean")
    assert main(["validate", str(artifact), "--reference", str(tiny_chains["mean"])]) == 0
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["routes"][0]["tokenizer"]["max_length"] = 16
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    assert main(["validate", str(artifact), "--reference", str(tiny_chains["mean"])]) == 8
    assert "manifest.json: changed after it was sealed" in capsys.readouterr().err
    # Sealed again, as someone who meant it would: the files all match, the results do not.
    seal(artifact, Manifest.from_json(json.dumps(manifest)))
    report = tmp_path / "validate.json"
    assert main(["validate", str(artifact), "--reference", str(tiny_chains["mean"]), "--report", str(report)]) == 6
    assert "FAIL encode.min_cosine" in capsys.readouterr().out
    assert json.loads(report.read_text())["parity"]["passed"] is False


def test_rebuild_replaces_the_artifact_and_cleans_stale_stages(tmp_path, tiny_chains):
    out = tmp_path / "dist"
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "-q"]) == 0
    marker = out / "mean-onnx-fp32" / "from-the-first-build"
    marker.write_text("the rebuild must replace the whole directory")
    stale = out / ".stage-999999999-mean-onnx-fp32-abc"  # a build killed long ago
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"partial")
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mean-onnx-fp32", "mean-report"]
    assert not marker.exists()
    read_manifest(out / "mean-onnx-fp32")


def test_token_embeddings_are_exported_only_when_asked(tmp_path, tiny_chains):
    from sentence_transformers import SentenceTransformer

    from packager.runtime import load

    assert main(["build", str(tiny_chains["mean"]), "--out", str(tmp_path), "--token-embeddings", "-q"]) == 0
    model = load(tmp_path / "mean-onnx-fp32")
    assert "encode.token_min_cosine" in model.manifest.parity.metrics
    tokens = model.encode(UNSEEN[:4], output_value="token_embeddings")
    expected = SentenceTransformer(str(tiny_chains["mean"]), device="cpu").encode(
        UNSEEN[:4], output_value="token_embeddings")
    for got, want in zip(tokens, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=2e-5)


@pytest.mark.parametrize("argv,code", [
    (["build", "{chain}", "--format", "tflite"], 2),
    (["build", "{chain}", "--precision", "fp16"], 2),  # ONNX fp16: refused with the reason
    (["build", "{chain}", "--precision", "int8", "--recipe", "openvino-fp32"], 2),
    (["build", "{chain}", "--gate", "int8.no_such_metric=1"], 2),
    (["build", "{missing}"], 3),
    (["build", "{chain}", "--validation-data", "{missing}"], 2),
    (["build", "{chain}", "--name", "../escape"], 2),
    (["build", "{chain}", "--reports", "{file}"], 2),  # a file, not a directory
])
def test_cli_exit_codes(argv, code, tiny_chains, tmp_path):
    (tmp_path / "file").touch()
    argv = [a.format(chain=tiny_chains["mean"], missing=tmp_path / "missing", tmp=tmp_path, file=tmp_path / "file")
            for a in argv]
    assert main([*argv, "--out", str(tmp_path / "dist")]) == code
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_unsafe_and_unsupported_sources_exit_4_through_the_console_script(tmp_path, tiny_chains):
    import shutil

    chain = Path(shutil.copytree(tiny_chains["mean"], tmp_path / "chain"))
    modules = json.loads((chain / "modules.json").read_text())
    modules[1]["path"] = "../../etc"
    (chain / "modules.json").write_text(json.dumps(modules))
    packager = Path(sys.executable).with_name("packager")
    result = subprocess.run([str(packager), "build", str(chain), "--out", str(tmp_path / "dist")],
                            capture_output=True, text=True)
    assert result.returncode == 4
    assert "leaves the model folder" in result.stderr and "Traceback" not in result.stderr
    modules[1] = {**modules[1], "path": "1_Pooling", "type": "evil.Module"}
    (chain / "modules.json").write_text(json.dumps(modules))
    assert main(["build", str(chain), "--out", str(tmp_path / "dist")]) == 4
    assert main(["inspect", str(chain)]) == 4


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as error:  # no abbreviations: --report is not --reports
        main(["build", "source", "--report", "report.json"])
    assert error.value.code == 2 and "unrecognized arguments: --report" in capsys.readouterr().err


def test_inspect_source_and_artifact(tiny_chains, tiny_artifacts, capsys):
    assert main(["inspect", str(tiny_chains["cls-dense"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["chain_kind"] == "SentenceTransformer" and info["compilable"] == "yes"
    assert [m["kind"] for m in info["modules"]] == ["Transformer", "Pooling", "Dense"]
    assert info["routes"]["default"]["tokenizer"]["max_length"] == 48 and info["verbs"]["encode"]["route"] == "default"
    assert main(["inspect", str(tiny_artifacts["cls-dense"])]) == 0
    text = capsys.readouterr().out
    assert "parity: passed" in text and "all sha256-verified" in text


def test_inspect_refuses_a_tampered_artifact(copy_artifact, capsys):
    artifact = copy_artifact("mean")
    (artifact / "tokenizer.json").write_text("{}")
    assert main(["inspect", str(artifact)]) == 8
    assert "tokenizer.json" in capsys.readouterr().err


def test_external_data_travels_with_the_graph(tmp_path, tiny_chains):
    """The weights live in model.onnx.data (onnxruntime maps it), hashed and moved with the graph."""
    import shutil

    from packager.runtime import load

    assert main(["build", str(tiny_chains["mean"]), "--out", str(tmp_path / "dist"), "-q"]) == 0
    artifact = tmp_path / "dist" / "mean-onnx-fp32"
    assert {"model.onnx", "model.onnx.data"} <= {f.path for f in read_manifest(artifact).files}
    # Zipped, moved and unpacked elsewhere, it still loads: nothing in it points outside it.
    archive = shutil.make_archive(str(tmp_path / "moved"), "zip", artifact)
    shutil.rmtree(tmp_path / "dist")
    shutil.unpack_archive(archive, tmp_path / "elsewhere")
    model = load(tmp_path / "elsewhere")
    assert model.encode(UNSEEN[:3]).shape == (3, 32)


def test_unwritable_output_is_a_clear_error(tmp_path, tiny_chains, capsys):
    out = tmp_path / "not-a-directory"
    out.write_text("a file where the output directory should be")
    assert main(["build", str(tiny_chains["mean"]), "--out", str(out), "-q"]) == 5
    # Found before any export: the reports directory (inside it) cannot be made.
    assert f"cannot write the reports to {out}/mean-report (Not a directory)" in capsys.readouterr().err
    assert out.read_text() == "a file where the output directory should be"


def test_saved_prompts_apply_as_in_sentence_transformers(tiny_chains, tiny_artifacts):
    from sentence_transformers import SentenceTransformer

    from packager.runtime import load

    model = load(tiny_artifacts["prompts"])
    assert model.manifest.prompts == {"query": "query: ", "document": "passage: "}
    assert model.manifest.default_prompt_name == "query"
    reference = SentenceTransformer(str(tiny_chains["prompts"]), device="cpu")
    for kwargs in ({}, {"prompt_name": "document"}, {"prompt": "custom: "}):
        np.testing.assert_allclose(model.encode(UNSEEN[:8], **kwargs), reference.encode(UNSEEN[:8], **kwargs),
                                   atol=2e-5, err_msg=str(kwargs))
    # The default prompt really is applied: without it the numbers differ.
    assert not np.allclose(model.encode(UNSEEN[0]), model.encode(UNSEEN[0], prompt=""), atol=1e-3)


def test_graph_takes_token_type_ids_only_when_the_tokenizer_makes_them(tiny_artifacts):
    assert read_manifest(tiny_artifacts["roberta-mean"]).route("default").inputs == ("input_ids", "attention_mask")
    assert read_manifest(tiny_artifacts["mean"]).route("default").inputs == (
        "input_ids", "attention_mask", "token_type_ids")


def test_a_legacy_cross_encoder_folder_builds(backbones, tmp_path):
    """A classifier saved without modules.json, as CrossEncoders were before sentence-transformers v4."""
    from sentence_transformers import CrossEncoder

    from packager.runtime import load

    assert main(["build", str(backbones.classifier), "--out", str(tmp_path), "--name", "legacy", "-q"]) == 0
    model = load(tmp_path / "legacy-onnx-fp32")
    pairs = [("a query", UNSEEN[0]), ("another query", UNSEEN[1])]
    np.testing.assert_allclose(model.predict(pairs), CrossEncoder(str(backbones.classifier)).predict(pairs), atol=3e-5)


def test_validate_checks_token_embeddings_too(tmp_path, tiny_chains):
    assert main(["build", str(tiny_chains["mean"]), "--out", str(tmp_path), "--token-embeddings", "-q"]) == 0
    report = tmp_path / "validate.json"
    assert main(["validate", str(tmp_path / "mean-onnx-fp32"), "--reference", str(tiny_chains["mean"]),
                 "--report", str(report)]) == 0
    checks = json.loads(report.read_text())["parity"]["checks"]
    assert "token_min_cosine" in {c["metric"].rpartition(".")[2] for c in checks}


def test_a_build_does_not_depend_on_the_torch_settings_set_before_it(tmp_path, tiny_chains, monkeypatch):
    """What ran before a build in the process (a notebook, another test) may have left torch with
    bfloat16 as its default dtype (sentence-transformers makes its Dense layers in it, rounding
    their float32 weights) or oneDNN at reduced float32 precision: the reference, its ranges and
    the gate would change with it. The build pins them, and gives the caller's back afterwards."""
    import torch

    from packager.builder import pipeline

    class StopBuildError(Exception):
        pass

    seen = []

    def stop(prepared, *args, **kwargs):  # the shared part of the build made: what the variants would get
        outputs = prepared.reference("encode", list(real_sentences()[:40]), batch_size=8, convert_to_numpy=True,
                                     show_progress_bar=False)
        seen.append((prepared.ranges, np.asarray(outputs)))
        raise StopBuildError

    monkeypatch.setattr(pipeline, "_variant", stop)
    options = BuildOptions(out=tmp_path, measure_speed=False, write_reports=False)
    with pytest.raises(StopBuildError):
        build(str(tiny_chains["cls-dense"]), options)
    mkldnn = torch.backends.mkldnn
    dtype, precision = torch.get_default_dtype(), mkldnn.matmul.fp32_precision
    torch.set_default_dtype(torch.bfloat16)
    mkldnn.matmul.fp32_precision = "bf16"
    try:
        with pytest.raises(StopBuildError):
            build(str(tiny_chains["cls-dense"]), options)
        assert torch.get_default_dtype() == torch.bfloat16 and mkldnn.matmul.fp32_precision == "bf16"  # given back
    finally:
        torch.set_default_dtype(dtype)
        mkldnn.matmul.fp32_precision = precision
    assert seen[1][0] == seen[0][0]  # the same ranges, from the same reference outputs
    np.testing.assert_array_equal(seen[1][1], seen[0][1])


def test_a_graph_holds_no_host_paths_and_nothing_from_earlier_exports(tiny_artifacts):
    """The exporter writes each node's Python stack trace into the graph: the build host's file
    paths (the checkout, the virtual environment) and a per-process counter of generated code,
    so the same build made other graph files after other exports in the process. They are removed;
    the rest of the exporter's metadata (each node's module path) is kept."""
    import onnx

    artifact = tiny_artifacts["mean"]
    for route in read_manifest(artifact).routes:
        graph = onnx.load(str(artifact / route.graph), load_external_data=False)
        keys = {p.key for node in graph.graph.node for p in node.metadata_props}
        assert "namespace" in keys and "pkg.torch.onnx.stack_trace" not in keys
        serialized = graph.SerializeToString()
        for host_path in {str(Path(__file__).resolve().parents[2]), sys.prefix}:
            assert host_path.encode() not in serialized


def test_the_same_build_twice_in_one_process_writes_the_same_graph_files(tmp_path, tiny_chains):
    """The exporters number what they make with counters shared by the whole process (torch's
    generated code, OpenVINO's node names): the second of two identical builds wrote other bytes.
    Now every graph file of the second is byte for byte the first's, int8 included (the same
    MatMuls kept in float by the search, the same quantized weights), with a build of another
    chain run between the two."""
    from packager.runtime.enums import Format, Precision

    def graphs(source: Path, out: Path) -> dict[str, bytes]:
        build(str(source), BuildOptions(formats=(Format.ONNX, Format.OPENVINO), precisions=(Precision.FP32,
                                                                                            Precision.INT8),
                                        out=out, measure_speed=False, write_reports=False))
        return {f"{artifact.name}/{f.path}": (artifact / f.path).read_bytes()
                for artifact in sorted(out.iterdir()) for f in read_manifest(artifact).files
                if f.path.endswith((".onnx", ".data", ".xml", ".bin"))}

    def decided(out: Path) -> dict[str, str | None]:
        return {artifact.name: read_manifest(artifact).recipe.details.get("float_matmuls")
                for artifact in out.iterdir()}

    first = graphs(tiny_chains["mean"], tmp_path / "first")
    graphs(tiny_chains["cls-dense"], tmp_path / "between")
    second = graphs(tiny_chains["mean"], tmp_path / "second")
    assert {Path(name).suffix for name in first} >= {".onnx", ".xml", ".bin"}
    assert len({name.split("/")[0] for name in first}) == 4  # onnx and openvino, fp32 and int8
    assert [name for name in first if first[name] != second.get(name)] == []
    assert decided(tmp_path / "first") == decided(tmp_path / "second")


def test_the_torch_weights_are_freed_before_the_first_candidate_loads(tmp_path, tiny_chains, monkeypatch):
    """A build holds the torch reference and a candidate's engine, each a copy of the weights: the
    reference runs every call of the gates first and frees its weights before the first candidate
    loads (a 0.6B decoder's build peaked at 5x its weights with both and onnxruntime's
    quantizer). The later variants' gates run on the kept reference outputs alone: a reference
    call after the release would fail the build."""
    from packager.builder import variant
    from packager.runtime.enums import Precision
    from packager.validators.parity import ReferenceRuns

    events: list[str] = []
    released: list[ReferenceRuns] = []
    real_release, real_import = ReferenceRuns.release, variant.import_loader

    def release(self: ReferenceRuns) -> None:
        events.append("release")
        released.append(self)
        real_release(self)

    def import_loader(stage_dir: Path):
        events.append("load")
        return real_import(stage_dir)

    monkeypatch.setattr(ReferenceRuns, "release", release)
    monkeypatch.setattr(variant, "import_loader", import_loader)
    build(str(tiny_chains["mean"]), BuildOptions(precisions=(Precision.FP32, Precision.INT8), out=tmp_path,
                                                 measure_speed=False, write_reports=False))
    assert events == ["release", "load", "release", "load"]
    assert {p.device.type for p in released[0].model.parameters()} == {"meta"}
