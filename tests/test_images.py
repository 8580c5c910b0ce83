"""CLIP-style chains (the "clip" and "clip-legacy" tiny chains): a text route and an image route,
the runtime's image pipeline against sentence-transformers' own on real images and on odd ones
the gate did not see, every form the loader takes an image in, hostile images refused, a loader
without torch (and without Pillow), and the pyfunc's image column."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from packager.publish import import_loader
from packager.runtime import InvalidInputError, load
from packager.runtime.manifest import read_manifest
from packager.validators.image_samples import real_images

PHOTO = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
TEXTS = ["a portrait of a woman", "a logo", "", "a present"]


def unseen_images() -> list:
    """The real images, and odd variants the parity gate did not see."""
    from PIL import Image

    photo, logo, drawing = real_images().values()
    return [photo, logo, drawing, logo.convert("LA"), photo.convert("1"), photo.resize((77, 333)),
            photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), photo.resize((2, 2)), drawing.convert("P"),
            photo.crop((0, 0, 31, 600))]


@pytest.fixture(scope="module")
def references(tiny_chains):
    from sentence_transformers import SentenceTransformer

    return {name: SentenceTransformer(str(tiny_chains[name]), device="cpu") for name in ("clip", "clip-legacy")}


def _close(got, want, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())), err_msg=what)


@pytest.mark.parametrize("name,fmt", [("clip", "onnx"), ("clip", "openvino"), ("clip-legacy", "onnx")])
def test_images_and_texts_match_sentence_transformers(name, fmt, references, tiny_artifacts, tiny_openvino,
                                                      tmp_path):
    artifact = (tiny_artifacts if fmt == "onnx" else tiny_openvino)[name]
    manifest = read_manifest(artifact)
    assert [(r.name, r.modality.value, r.inputs) for r in manifest.routes] == [
        ("text", "text", ("input_ids", "attention_mask")), ("image", "image", ("pixel_values",))]
    assert manifest.parity.status.value == "passed" and manifest.requires == ("pillow",)
    assert manifest.parity.metrics["images.similarity_rel_diff"] < 1e-4
    model, reference = import_loader(artifact).load(artifact), references[name]

    images = unseen_images()
    got, want = model.encode(images, batch_size=4), reference.encode(images, batch_size=4)
    _close(got, want, "images")
    assert np.all(np.diff(np.linalg.norm(want, axis=1)) != 0)  # the images embed differently: the check can fail
    _close(model.encode_query(images[:3]), want[:3], "encode_query of images (prompts are for texts)")
    _close(model.encode(images[0]), want[0], "one image")
    texts = reference.encode(TEXTS)
    _close(model.encode(TEXTS), texts, "texts")
    _close(model.similarity(model.encode(TEXTS), got), reference.similarity(texts, want).numpy(), "text-image")

    # Files in every form the loader takes, against sentence-transformers on the path (which it
    # opens with EXIF orientation and transparency dropped): a JPEG with an EXIF rotation, a PNG
    # with transparency; and an HWC array. Then mixed with texts, in input order.
    for path in _files(tmp_path):
        raw = path.read_bytes()
        expected = reference.encode([str(path)])[0]
        forms = [str(path), raw, bytearray(raw), "data:image/png;base64," + base64.b64encode(raw).decode()]
        _close(model.encode(forms), np.stack([expected] * len(forms)), f"{path.name}: path, bytes, data URI")
    photo = reference.encode([images[0]])[0]
    _close(model.encode(np.asarray(images[0])), reference.encode([np.asarray(images[0])])[0], "an HWC array")
    raw = PHOTO.read_bytes()
    mixed = model.encode([TEXTS[0], raw, TEXTS[1], str(PHOTO), images[1]], batch_size=2)
    _close(mixed, np.stack([texts[0], photo, texts[1], photo, want[1]]), "mixed, in input order")


def _files(folder: Path) -> list[Path]:
    """Image files that sentence-transformers opens differently from the PIL image they hold."""
    from PIL import Image

    photo, logo, _ = real_images().values()
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    photo.resize((200, 120)).save(folder / "exif.jpg", exif=exif.tobytes())
    logo.save(folder / "alpha.png")
    return [folder / "exif.jpg", folder / "alpha.png"]


def test_the_pixel_values_are_the_processors_own(tiny_artifacts, references):
    """The runtime's preprocessing against the reference's processor output, pixel by pixel,
    on every branch of it: each image mode, upscaling, and (with a crop larger than the resize)
    a crop that needs padding; an exact-size resize with the nearest filter."""
    from types import SimpleNamespace

    from PIL import Image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from packager.chain.image_processor import resolve_image_spec
    from packager.runtime.image_inputs import ImagePipeline

    route = read_manifest(tiny_artifacts["clip"]).route("image")
    images = [*unseen_images(), Image.new("CMYK", (40, 50), (10, 200, 30, 5)), Image.new("I;16", (33, 35), 999),
              Image.new("RGBa", (20, 30), (10, 20, 30, 40)), Image.new("PA", (25, 25))]
    processors = {"the model's": references["clip"][0].processor.image_processor,
                  "crop larger than the resize": CLIPImageProcessorPil(size={"shortest_edge": 20},
                                                                       crop_size={"height": 32, "width": 28}),
                  "exact size, nearest": CLIPImageProcessorPil(size={"height": 24, "width": 40}, resample=0,
                                                               do_center_crop=False)}
    for label, processor in processors.items():
        spec = route.image if label == "the model's" else resolve_image_spec(
            "image", SimpleNamespace(processor=SimpleNamespace(image_processor=processor)))
        ours = ImagePipeline(spec).pixel_values(images)
        np.testing.assert_array_equal(ours, processor(images, return_tensors="np")["pixel_values"], err_msg=label)


# Qwen2-VL's image processor in the shapes transformers 5 ships: Qwen2-VL / Qwen2.5-VL (14-pixel
# patches), Qwen3-VL's (16-pixel patches, its own mean and std), and a least number of pixels
# that most of the images below are upscaled to. The pixel limits are small, so each image is
# resized (down or up) and the test stays fast.
PATCHERS = {"qwen2-vl": {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 40},
            "qwen3-vl": {"patch_size": 16, "min_pixels": 64 * 64, "max_pixels": 32 * 32 * 30,
                         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
            "upscaled": {"min_pixels": 28 * 28 * 60, "max_pixels": 28 * 28 * 90}}


def _patched_images() -> list:
    """The unseen images, more modes, one whose sides are an odd number of half patch blocks
    (Python rounds 3.5 and 2.5 to even), and images whose rounded sizes land just above and just
    below the pixel limits of the "qwen2-vl" patcher (40 and 4 tokens' worth)."""
    from PIL import Image

    photo = real_images()["grace_hopper.jpg"]
    return [*unseen_images(), Image.new("CMYK", (40, 50), (10, 200, 30, 5)), Image.new("I;16", (33, 35), 999),
            Image.new("RGBa", (20, 30), (10, 20, 30, 40)), photo.resize((98, 70)), photo.resize((28 * 8, 28 * 5)),
            photo.resize((28 * 8 + 14, 28 * 5 + 14)), photo.resize((56, 56)), photo.resize((55, 42))]


@pytest.mark.parametrize("shape", PATCHERS)
def test_patched_images_are_the_qwen_vl_processors_own(shape):
    """Qwen2-VL's patching, resolved from the processor and run by the runtime, against the
    processor's own pixel_values and image_grid_thw, bit for bit, over every mode and odd size
    the CLIP test uses and sizes at the pixel limits. The processor is transformers' PIL backend,
    which runs without torchvision; its grid sets how many image tokens an image expands to."""
    from types import SimpleNamespace

    from transformers import Qwen2VLImageProcessorPil

    from packager.chain.image_processor import resolve_image_spec
    from packager.runtime.image_inputs import ImagePipeline

    processor = Qwen2VLImageProcessorPil(**PATCHERS[shape])
    spec = resolve_image_spec("image", SimpleNamespace(processor=SimpleNamespace(image_processor=processor)))
    assert spec.patches is not None and spec.patches.patch_size == processor.patch_size
    images = _patched_images()
    pixel_values, grid = ImagePipeline(spec).patches(images)
    want = processor(images, return_tensors="np")
    np.testing.assert_array_equal(grid, want["image_grid_thw"])
    np.testing.assert_array_equal(pixel_values, want["pixel_values"])
    assert pixel_values.dtype == want["pixel_values"].dtype == np.float32
    tokens = grid.prod(-1) // processor.merge_size**2
    assert tokens.min() >= 1 and len(set(tokens.tolist())) > 3, tokens  # the sizes differ, so do the counts
    if shape == "qwen2-vl":
        limits = tokens[-4:].tolist()
        assert limits[0] == 40 and limits[1] <= 40 and limits[2] == 4 == limits[3], limits


def test_patched_images_refuse_what_the_processor_refuses_and_manifests_carry_the_rule():
    """An image over 200 times as long as it is wide is refused (the processor raises too); no
    images give no patches; the patch rule survives the manifest's JSON and its bounds are
    checked when it is read. A processor that does not resize, or whose class has a step of its
    own, is refused when the rule is resolved."""
    from types import SimpleNamespace

    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    from packager.chain.image_processor import resolve_image_spec
    from packager.errors import UnsupportedModuleError
    from packager.runtime.errors import ArtifactIntegrityError
    from packager.runtime.image_inputs import ImagePipeline
    from packager.runtime.jsonable import from_jsonable, to_jsonable
    from packager.runtime.routes import ImageSpec, PatchSpec

    patches = PatchSpec(patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=3136, max_pixels=31360)
    spec = ImageSpec(convert_rgb=True, shortest_edge=None, size=None, resample=3, crop=None, rescale=1 / 255,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), patches=patches)
    assert from_jsonable(ImageSpec, json.loads(json.dumps(to_jsonable(spec))), "image") == spec
    unpatched = dict(to_jsonable(spec), patches=None, size=[8, 8])
    assert "patches" not in to_jsonable(from_jsonable(ImageSpec, unpatched, "image"))  # older manifests unchanged
    thin = Image.new("RGB", (2010, 10))
    with pytest.raises(ValueError, match="200"):
        Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=31360)([thin])
    with pytest.raises(InvalidInputError, match=r"item 1: .*200 times"):
        ImagePipeline(spec).patches([Image.new("RGB", (200, 10)), thin])
    none, grid = ImagePipeline(spec).patches([])
    assert none.shape == (0, 3 * 2 * 14 * 14) and grid.shape == (0, 3)

    class OwnSteps(Qwen2VLImageProcessorPil):
        def patchify(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().patchify(*args, **kwargs)

    for processor, reason in ((Qwen2VLImageProcessorPil(do_resize=False), "does not resize"),
                              (OwnSteps(), "has its own patchify")):
        with pytest.raises(UnsupportedModuleError, match=reason):
            resolve_image_spec("image", SimpleNamespace(processor=SimpleNamespace(image_processor=processor)))
    for bad in ({"crop": [8, 8]}, {"patches": dict(to_jsonable(patches), max_pixels=3000)},
                {"patches": dict(to_jsonable(patches), merge_size=0)}):
        with pytest.raises(ArtifactIntegrityError):
            from_jsonable(ImageSpec, dict(to_jsonable(spec), **bad), "image")


HOSTILE = {
    "random bytes": np.random.default_rng(0).bytes(2048),
    "empty bytes": b"",
    "a truncated JPEG": PHOTO.read_bytes()[:20_000],
    "a truncated PNG": (PHOTO.parent / "logo2.png").read_bytes()[:3000],
    "an array 3 pixels high (ambiguous: channels first?)": np.zeros((3, 40, 3), np.uint8),
    "a PostScript file (a decoder that runs Ghostscript)": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "a PNG header claiming 40000x40000 pixels": None,  # made below
    "a URL (not fetched by default)": "https://example.com/cat.jpg",
    "a data URI of bad base64": "data:image/png;base64,!!!",
    "a float array": np.zeros((8, 8, 3), np.float32),
    "a 4-D array": np.zeros((1, 8, 8, 3), np.uint8),
    "a zero-size image": "zero",
    "an image too thin to resize (1 x 3,000,000)": "thin",
    "a dict": {"image": "x"},
}


def _bomb() -> bytes:
    """A valid PNG whose header claims 40000x40000 pixels (1.6 billion): decoding it would take
    gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("what", HOSTILE)
def test_hostile_images_are_refused_and_the_model_still_works(what, tiny_artifacts):
    from PIL import Image

    value = {"a PNG header claiming 40000x40000 pixels": _bomb(), "a zero-size image": Image.new("RGB", (0, 0)),
             "an image too thin to resize (1 x 3,000,000)": Image.new("L", (3_000_000, 1))}.get(what, HOSTILE[what])
    model = load(tiny_artifacts["clip"])
    with pytest.raises(InvalidInputError, match=r"item 1\b|item 1:|expected texts or images") as caught:
        model.encode(["a text", value])
    assert "item 1" in str(caught.value) or what == "a dict", str(caught.value)
    assert model.encode([str(PHOTO)]).shape == (1, 16)


def test_clip_chains_need_a_sentence_transformer_and_text_image_modalities(tiny_chains, tmp_path):
    """Other modality combinations and chain kinds are refused before any work, with the reason:
    chat messages with images for a model other than a Qwen-VL one, and a Qwen-VL model (its
    config.json's model type) in a CrossEncoder."""
    import shutil

    from packager.chain import check_compilable, read_chain
    from packager.errors import UnsupportedModuleError

    def edited(name: str, change) -> Path:
        folder = Path(shutil.copytree(tiny_chains["clip"], tmp_path / name))
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        change(config)
        (folder / "sentence_bert_config.json").write_text(json.dumps(config))
        return folder

    forward = {"method": "forward", "method_output_name": "last_hidden_state"}
    audio = edited("audio", lambda c: c["modality_config"].update(audio=forward))
    tokens = edited("tokens", lambda c: c.update(module_output_name="token_embeddings"))
    messages = edited("messages", lambda c: c["modality_config"].update(message=forward))
    reranker = edited("reranker", lambda c: c["modality_config"].update(message=forward))
    for name, value in (("config.json", {"model_type": "qwen2_vl"}),
                        ("config_sentence_transformers.json", {"model_type": "CrossEncoder"})):
        file = reranker / name
        file.write_text(json.dumps({**json.loads(file.read_text()), **value}))
    for folder, reason in ((audio, r"not \['audio'\]: audio and video need"),
                           (tokens, "one embedding per text and per image"),
                           (messages, "chat messages with images compile for Qwen2-VL, Qwen2.5-VL and Qwen3-VL "
                                      "models, not clip"),
                           (reranker, "compiles as a SentenceTransformer without a Router in this version, not "
                                      "a CrossEncoder")):
        with pytest.raises(UnsupportedModuleError, match=reason):
            check_compilable(read_chain(str(folder)))


@pytest.mark.slow  # installs Pillow apart (from the wheels scripts/setup.sh keeps): run by .ci/run
def test_image_artifacts_need_pillow_and_then_match_without_torch(runtime_python, tiny_artifacts, tmp_path):
    from conftest import IMAGE_PACKAGES, RUNTIME_WHEELS

    artifact = tiny_artifacts["clip"]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(artifact)!r})
        from loader import load
        try:
            model = load({str(artifact)!r})
            raw = open({str(PHOTO)!r}, "rb").read()
            print(json.dumps({{"values": model.encode([{str(PHOTO)!r}, raw, "a text"]).tolist(),
                              "torch": "torch" in sys.modules}}))
        except Exception as e:
            print(json.dumps({{"error": type(e).__name__, "message": str(e)}}))
    """)

    def run(extra_path: str = "") -> dict:
        result = subprocess.run([str(runtime_python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": extra_path})
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    missing = run()
    assert missing["error"] == "MissingDependencyError" and "pillow" in missing["message"], missing
    packages = tmp_path / "image-packages"
    subprocess.run([str(runtime_python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(RUNTIME_WHEELS), "--target", str(packages), *IMAGE_PACKAGES], check=True,
                   env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    got = run(str(packages))
    assert got["torch"] is False
    expected = load(artifact).encode([str(PHOTO), PHOTO.read_bytes(), "a text"])
    np.testing.assert_allclose(got["values"], expected, atol=1e-6)


def test_an_image_chain_registers_and_its_pyfunc_takes_an_image_column(tiny_artifacts, tmp_path, monkeypatch):
    import mlflow
    import pandas as pd

    from packager.registry.mlflow_store import MlflowStore

    monkeypatch.chdir(tmp_path)
    store = MlflowStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifact = tiny_artifacts["clip"]
    registered = store.register(artifact, "clip")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(registered.model_uri)
    from_registry = load(registered.model_uri)
    requirements = (from_registry.path.parents[1] / "requirements.txt").read_text().split()
    from packaging.requirements import Requirement

    assert any(Requirement(r).name == "pillow" for r in requirements), requirements
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    location = MlflowClient(store.tracking_uri, registry_uri=store.tracking_uri).get_model_version_download_uri(
        registered.name, registered.version)
    local = Path(download_artifacts(artifact_uri=location, tracking_uri=store.tracking_uri))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["text", "image"]  # how a JSON request sends an image

    model = load(artifact)
    raw = PHOTO.read_bytes()
    frame = pd.DataFrame({"text": ["a portrait", None, None, str(PHOTO)],
                          "image": [None, base64.b64encode(raw).decode(), raw, None]})
    expected = model.encode(["a portrait", raw, raw])
    got = np.asarray(pyfunc.predict(frame, params={"verb": "encode_query"}))
    np.testing.assert_allclose(got[:3], expected, atol=1e-6)
    # A string is a text, never a path the server would read.
    np.testing.assert_allclose(got[3], model.encode(str(PHOTO), image_strings=False), atol=1e-6)
    assert not np.allclose(got[3], expected[1], atol=1e-3)
    for bad, reason in ((pd.DataFrame({"text": ["a", None], "image": ["eA==", None]}), "not both"),
                        (pd.DataFrame({"image": ["!!"]}), "not valid base64"),
                        (pd.DataFrame({"image": [base64.b64encode(b"not an image").decode()]}), "Pillow can decode"),
                        (pd.DataFrame({"image": [3]}), "bytes or a base64 string")):
        with pytest.raises(mlflow.exceptions.MlflowException, match=reason):
            pyfunc.predict(bad)
