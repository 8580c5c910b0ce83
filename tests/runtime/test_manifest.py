"""The manifest: strict round trip, validation, schema version."""

from __future__ import annotations

import dataclasses
import json

import pytest

from packager.runtime.backends import ACTIVATION_GROUP, Compute
from packager.runtime.errors import ArtifactIntegrityError
from packager.runtime.manifest import FileDigest, Manifest, read_manifest


@pytest.fixture(scope="module")
def manifest_text(tiny_artifacts) -> str:
    return (tiny_artifacts["mean"] / "manifest.json").read_text()


def test_round_trip_is_exact_and_sorted(manifest_text):
    manifest = Manifest.from_json(manifest_text)
    assert manifest.to_json() == manifest_text
    data = json.loads(manifest_text)
    assert list(data) == sorted(data)
    assert data["schema_version"] == 6


def test_manifest_describes_what_the_runtime_needs(manifest_text):
    manifest = Manifest.from_json(manifest_text)
    route = manifest.route("default")
    assert route.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert [o.name for o in route.outputs] == ["sentence_embedding"]
    assert route.tokenizer.max_length == 48 and route.tokenizer.file == "tokenizer.json"
    assert manifest.similarity.value == "cosine" and manifest.embedding_dimension == 32
    assert manifest.parity.status.value == "passed" and manifest.parity.metrics["encode.min_cosine"] >= 0.99999
    assert manifest.source.kind == "path" and len(manifest.source.sha256) == 64
    assert {"torch", "onnxruntime", "sentence-transformers", "tokenizers"} <= set(manifest.tools)
    assert {f.path for f in manifest.files} >= {"model.onnx", "tokenizer.json", "parity.json", "README.md",
                                               "loader/__init__.py"}


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(schema_version=1), "unknown schema_version 1"),
    (lambda d: d.pop("schema_version"), "unknown schema_version None"),
    (lambda d: d.update(surprise=1), r"unknown fields \['surprise'\]"),
    (lambda d: d["routes"][0].update(extra=True), "unknown fields"),
    (lambda d: d.pop("format"), "missing field 'format'"),
    (lambda d: d.update(format="tflite"), "'tflite' is not one of"),
    (lambda d: d.update(embedding_dimension="32"), "expected int"),
    (lambda d: d["routes"][0].update(graph="../model.onnx"), "stay inside"),
    (lambda d: d["files"][0].update(path="/etc/passwd"), "stay inside"),
    (lambda d: d.update(routes=[]), "no routes"),
    (lambda d: d["parity"]["metrics"].update(big=10**400), "too large for a float"),
    (lambda d: d.update(int8_arithmetic="saturation-free"), "int8_arithmetic belongs to int8 artifacts, not fp32"),
    (lambda d: d.update(int8_arithmetic="whatever-the-cpu-does"), "'whatever-the-cpu-does' is not one of"),
    (lambda d: d.update(precision="int8", int8_arithmetic="vnni-or-float-products"),
     "int8_arithmetic vnni-or-float-products is OpenVINO's, not onnx's"),
    (lambda d: d.update(format="openvino", precision="int8", int8_arithmetic="vnni-or-float-products"),
     "without the gate's float_products run"),
    (lambda d: d.update(precision="bf16"), "bf16 artifacts are OpenVINO's, not onnx's"),
])
def test_invalid_manifests_are_refused(manifest_text, edit, match):
    data = json.loads(manifest_text)
    edit(data)
    with pytest.raises(ArtifactIntegrityError, match=match):
        Manifest.from_json(json.dumps(data))


def test_not_json_and_missing_manifest(tmp_path):
    with pytest.raises(ArtifactIntegrityError, match="not valid JSON"):
        Manifest.from_json("{")
    with pytest.raises(ArtifactIntegrityError, match="not a packaged artifact"):
        read_manifest(tmp_path)


def test_dataclasses_are_frozen(manifest_text):
    manifest = Manifest.from_json(manifest_text)
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.name = "other"  # type: ignore[misc]
    with pytest.raises(ArtifactIntegrityError):
        FileDigest(path="a", sha256="not-a-digest", size=1)


# A Qwen-VL patch rule and model settings (issue 36): patches run only in a vision-language message route.
PATCHES = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 3136, "max_pixels": 1003520}
VISION = {"family": "qwen2_vl", "image_token_id": 5, "merge_size": 2}
CHAT = {"template": "chat_template.jinja", "message_format": "structured", "variables": {}, "task_variable": False,
        "restore_suffix": True}
VISION_INPUTS = ["input_ids", "attention_mask", "position_ids", "pixel_patches", "patch_positions", "image_segments"]


def _vision_route(data: dict, **changes: object) -> None:
    """The clip fixture's text route made a Qwen2-VL message route, with ``changes``."""
    image = dict(data["routes"][1]["image"], crop=None, shortest_edge=None, patches=PATCHES)
    data["requires"] = sorted({*data["requires"], "jinja2"})
    data["routes"][0].update({"vision": VISION, "image": image, "chat": CHAT, "inputs": VISION_INPUTS, **changes})


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["routes"][1]["image"].update(shortest_edge=0), "in 1..16384"),
    (lambda d: d["routes"][1]["image"].update(crop=None), "fixed image size"),
    (lambda d: d["routes"][1]["image"].update(mean=[float("nan"), 0.5, 0.5]), "finite"),
    (lambda d: d["routes"][1]["image"].update(std=[1.0, 0.0, 1.0]), "std > 0"),
    (lambda d: d["routes"][1]["image"].update(resample=9), "resample filter"),
    (lambda d: d["routes"][1]["image"].update(crop=None, shortest_edge=None, patches=PATCHES),
     "only a vision-language message route runs"),
    (lambda d: d["routes"][0].update(vision=VISION), "an image pipeline only with a vision model's settings"),
    (lambda d: d["routes"][0].update(vision=VISION, image=d["routes"][1]["image"]),
     "needs a chat template and images cut into patches"),
    (lambda d: d["routes"][0].update(vision=dict(VISION, family="qwen2_5_vl")), "needs window"),
    (lambda d: d["routes"][0].update(vision=dict(VISION, window=4)), "has no window"),
    (lambda d: d["routes"][0].update(vision=dict(VISION, family="qwen3_vl", table_side=1 << 20)),
     r"needs table_side \(1..16384\)"),
    (lambda d: d["routes"][0].update(vision=dict(VISION, merge_size=0)), "merge size"),
    (lambda d: _vision_route(d, inputs=VISION_INPUTS[:-1]), "a qwen2_vl route takes"),
    (lambda d: _vision_route(d, chat=dict(CHAT, message_format="flat")), "parts of structured chat messages"),
    (lambda d: _vision_route(d, vision=dict(VISION, merge_size=4)), "merges patches as its patch rule does"),
    (lambda d: (d["routes"][0].update(chat=dict(CHAT, special_tokens=True)), d.update(requires=["jinja2", "pillow"])),
     "special_tokens belong"),
    (lambda d: d["routes"][0].update(vision=dict(VISION, image_token_id=-1)), "image token"),
    (lambda d: d["routes"][1]["image"].update(patches=PATCHES), "patch rule only"),
    (lambda d: d["routes"][1]["image"].update(crop=None, shortest_edge=None, patches=dict(
        PATCHES, temporal_patch_size=1024)), "temporal patch size 1..16"),
    (lambda d: d["routes"][1]["image"].update(crop=None, shortest_edge=None, patches=dict(
        PATCHES, max_pixels=1 << 28)), "max_pixels <= 89478485"),
    (lambda d: d["routes"][1].update(inputs=["pixel_values", "input_ids"]), "pixel_values input only"),
    (lambda d: d["routes"][1].update(modality="text"), "needs a tokenizer"),
    (lambda d: d.update(requires=[]), "require pillow"),
    (lambda d: d["verbs"]["encode"].update(image_route="text"), "an image route for images"),
    (lambda d: d.update(chain_kind="SparseEncoder"), "belong to SentenceTransformer"),
])
def test_forged_image_routes_are_refused(tiny_artifacts, edit, match):
    data = json.loads((tiny_artifacts["clip"] / "manifest.json").read_text())
    assert [r["modality"] for r in data["routes"]] == ["text", "image"]
    edit(data)
    with pytest.raises(ArtifactIntegrityError, match=match):
        Manifest.from_json(json.dumps(data))


def test_the_forged_vision_routes_differ_from_a_valid_one_only_by_their_edit(tiny_artifacts):
    """The vision cases above start from a route the manifest accepts: each refusal is its edit's."""
    data = json.loads((tiny_artifacts["clip"] / "manifest.json").read_text())
    _vision_route(data)
    route = Manifest.from_json(json.dumps(data)).routes[0]
    assert route.vision is not None and route.vision.merge_size == 2 and route.chat is not None


def test_an_artifact_sealed_before_embedding_ranges_still_loads(copy_artifact):
    """Its manifest has no ``embedding_ranges`` key and a digest made without one (as packager
    wrote them before the field): it loads, and int8 output asks for ranges."""
    import hashlib

    from packager.runtime import InvalidInputError, load

    artifact = copy_artifact()
    data = json.loads((artifact / "manifest.json").read_text())
    assert data.pop("embedding_ranges")  # what this build records
    data["sealed_sha256"] = ""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    data["sealed_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    (artifact / "manifest.json").write_text(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    model = load(artifact)
    assert model.manifest.embedding_ranges == {} and model.encode(["a text"]).shape[0] == 1
    with pytest.raises(InvalidInputError, match="records none"):
        model.encode(["a text"], precision="int8")


@pytest.mark.parametrize("edit,float_products,compute", [
    ({}, False, Compute("f32", 0)),
    ({"format": "openvino", "precision": "bf16"}, False, Compute("bf16", 0)),
    ({"format": "openvino", "precision": "int8", "int8_arithmetic": "float-products"}, False, Compute("f32", 0)),
    ({"format": "openvino", "precision": "int8", "int8_arithmetic": "vnni-or-float-products"}, False,
     Compute("f32", ACTIVATION_GROUP)),
    ({"format": "openvino", "precision": "int8", "int8_arithmetic": "vnni-or-float-products"}, True,
     Compute("f32", 0)),
])
def test_the_arithmetic_a_graph_runs_in_is_the_one_its_gate_measured(manifest_text, edit, float_products, compute):
    data = json.loads(manifest_text)
    data.update(edit)
    data["parity"]["metrics"]["float_products.encode.min_cosine"] = 0.999  # the gate's second run
    assert Compute.of(Manifest.from_json(json.dumps(data)), float_products=float_products) == compute
