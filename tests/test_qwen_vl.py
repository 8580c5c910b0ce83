"""Qwen-VL chains (issue 36): the tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL SentenceTransformers are
saved by sentence-transformers and loaded as the build loads a reference, in .venv-vl (their
processors need torchvision). There, on chat messages mixing texts and images, the runtime's
patching, image token counts and the vision tower's and language model's positions are put beside
the processor's and the model's own (tests/vl_reference.py); each chain builds in ONNX and
OpenVINO, fp32 and int8, through its parity gates; and a process without torch loads the
artifacts and embeds texts, images and messages as sentence-transformers does."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tiny_vl import MAX_PIXELS, VL_FAMILIES

from packager.validators.image_samples import real_image_files

SCRIPT = Path(__file__).with_name("vl_reference.py")
PHOTO, LOGO, DRAWING = (str(path) for path in real_image_files())
# What the torch-free loader embeds: a text, an image (a path), a text with an image, a message
# with a system turn and two images.
INPUTS = ["what is a compiler?", PHOTO, {"text": "a logo", "image": LOGO},
          [{"role": "system", "content": "Compare pictures."},
           {"role": "user", "content": [{"type": "text", "text": "these two:"}, {"type": "image", "image": PHOTO},
                                        {"type": "image", "image": DRAWING}]}]]
# The artifacts a build makes of each chain.
VARIANTS = ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8")


def _gated_images() -> int:
    """How many images and messages mixing them the gate compares: the parity images and messages."""
    import tempfile

    from packager.validators.image_samples import parity_images, parity_messages

    with tempfile.TemporaryDirectory() as folder:
        images = parity_images(Path(folder))
        return len(images) + len(parity_messages(images))


GATED_IMAGES = _gated_images()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vl")


@pytest.fixture(scope="module")
def compared(vl_python, scratch) -> dict:
    inputs = scratch / "inputs.json"
    inputs.write_text(json.dumps(INPUTS))
    run = subprocess.run([str(vl_python), str(SCRIPT), str(scratch), str(inputs)], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(vl_python, scratch, compared) -> dict[str, Path]:
    """Each family's chain (saved by ``compared``) built in every variant; the build fails unless
    every variant passes its gate."""
    out = scratch / "dist"
    for family in VL_FAMILIES:
        run = subprocess.run([str(vl_python.parent / "packager"), "build", str(scratch / family), "--format",
                              "onnx,openvino", "--precision", "fp32,int8", "--out", str(out), "--no-register"],
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return {family: out for family in VL_FAMILIES}


@pytest.mark.slow  # needs .venv-vl (6.7 GB, made by scripts/setup.sh with PACKAGER_VL=1, which .ci/run sets)
@pytest.mark.parametrize("family", VL_FAMILIES)
def test_the_runtime_patches_counts_and_positions_are_the_qwen_vl_references_own(family, compared):
    """Bit for bit: pixel values and grids against the processor inside sentence-transformers'
    preprocessing; one run of image tokens per image, as long as its grid over the merge size
    squared; token types; M-RoPE positions against the model's get_rope_index; patch positions,
    and Qwen2.5-VL's windows or Qwen3-VL's interpolated positions, read from the loaded model's
    settings, against the tower's helpers. The images include one resized to exactly the most
    pixels; the reference encodes the messages."""
    got = compared[family]
    assert compared["torchvision"].startswith("0.29.1"), compared["torchvision"]
    assert got["image_processor"] == "Qwen2VLImageProcessorPil"
    assert got["pixel_values_equal"] and got["grid"] == got["processor_grid"], got
    assert len(got["grid"]) == 8 and got["image_tokens_per_run"] == got["tokens_per_image"], got
    assert got["token_types_equal"] and got["rope_positions_equal"], got
    assert got["largest_patched_pixels"] == MAX_PIXELS, got
    assert got["embeddings_finite"] and got["embeddings_shape"] == [6, 32], got
    refusal = got["torchvision_backend_refusal"]
    assert refusal and "backend 'torchvision'" in refusal and '"use_fast": false' in refusal, refusal
    assert got["patch_positions_equal"], got
    assert got.get("windows_equal") is (True if family == "qwen2.5-vl" else None), got
    assert got.get("interpolation_equal") is (True if family == "qwen3-vl" else None), got


def test_a_qwen_vl_processor_needs_torchvision_which_the_tests_venv_lacks():
    """Why .venv-vl exists: transformers constructs a Qwen-VL processor only with its video
    processor, which imports torchvision, and the tests' own venv (torch 2.13.0, CPU) has none
    that loads. The day the import works, this test fails, and the references can load in the
    tests' own venv."""
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None
    with pytest.raises(ImportError, match="torchvision"):
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: F401


@pytest.mark.slow  # needs .venv-vl (see above)
@pytest.mark.parametrize("family", VL_FAMILIES)
def test_a_qwen_vl_sentence_transformer_builds_and_passes_every_gate_on_texts_images_and_messages(family, built):
    """ONNX and OpenVINO, fp32 and int8: each variant's manifest names the family's vision settings,
    and its gate compared the texts, the parity images and the messages mixing them (several images
    in one message, images at both pixel limits)."""
    family_type = family.replace(".", "_").replace("-", "_")
    for variant in VARIANTS:
        manifest = json.loads((built[family] / f"{family}-{variant}" / "manifest.json").read_text())
        route, = manifest["routes"]
        assert route["vision"]["family"] == family_type and route["image"]["patches"], route
        assert (route["vision"]["window"] is not None) is (family == "qwen2.5-vl"), route["vision"]
        assert (route["vision"]["table_side"] is not None) is (family == "qwen3-vl"), route["vision"]
        parity = manifest["parity"]
        assert parity["status"] == "passed", parity
        gated = {metric for metric in parity["metrics"] if metric.startswith("images.")}
        assert {"images.min_cosine", "images.mean_cosine"} <= gated, sorted(parity["metrics"])
        samples = json.loads((built[family] / f"{family}-{variant}" / "parity.json").read_text())["samples"]
        assert len(samples["images"]["cosine"]) == GATED_IMAGES, len(samples["images"]["cosine"])


@pytest.mark.slow  # needs .venv-vl (see above)
def test_the_artifacts_embed_as_sentence_transformers_does_in_a_process_without_torch(built, compared,
                                                                                     serving_python, tmp_path):
    """The artifacts' own loader, in a venv with the runtime's packages and no torch: texts, an image
    path, a text+image dict and a message with two images, against sentence-transformers' embeddings
    of each, in one batch and one input at a time (a chunk each; OpenVINO's bucketed widths, rows
    and patches differ between the two); and what it refuses: encoded bytes in a message, a video
    part, and images whose tokens do not fit the route's 256."""
    paths = {f"{family} {variant}": str(built[family] / f"{family}-{variant}")
             for family in VL_FAMILIES for variant in VARIANTS}
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {paths[f"{VL_FAMILIES[0]} onnx-fp32"]!r})
        from loader import load
        inputs = json.loads({json.dumps(INPUTS)!r})
        found = {{}}
        for name, path in {paths!r}.items():
            model = load(path)
            found[name] = {{"values": model.encode(inputs).tolist(), "errors": [],
                           "one_by_one": model.encode(inputs, batch_size=1).tolist()}}
            for bad in ([{{"role": "user", "content": [{{"type": "image", "image": b"PNG"}}]}}],
                        [{{"role": "user", "content": [{{"type": "video", "video": "a.mp4"}}]}}],
                        {{"text": "seven", "image": [{PHOTO!r}] * 7}}):
                try:
                    model.encode(["fine", bad])
                    found[name]["errors"].append(None)
                except Exception as e:
                    found[name]["errors"].append([type(e).__name__, str(e)])
        print(json.dumps({{"found": found, "torch": "torch" in sys.modules}}))
    """)
    run = subprocess.run([str(serving_python), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    for name, got in result["found"].items():
        family, variant = name.split()
        expected = np.array(compared[family]["encoded"])
        values = np.array(got["values"])
        if variant.endswith("fp32"):  # (dynamic int8 quantizes activations per batch: batches differ there)
            np.testing.assert_allclose(got["one_by_one"], values, atol=1e-5, err_msg=name)  # a chunk per input
            np.testing.assert_allclose(values, expected, atol=1e-5, err_msg=name)
        else:
            assert (np.sum(values * expected, axis=1) >= 0.99).all(), (name, np.sum(values * expected, axis=1))
        kinds = [error[0] if error else None for error in got["errors"]]
        assert kinds == ["InvalidInputError"] * 3, (name, got["errors"])
        messages = [error[1] for error in got["errors"]]
        assert "item 1" in messages[0] and "encoded image bytes" in messages[0], messages
        assert "videos and audio are not taken" in messages[1], messages
        assert "its images take more than the route's max length of 256 tokens" in messages[2], messages


@pytest.mark.slow  # needs .venv-vl (see above)
def test_the_pyfunc_reads_no_path_a_caller_names_and_takes_image_rows(built):
    """Served through the pyfunc, a string naming an image file on the server is a text: its
    embedding is the loader's with ``image_strings=False``, not the image's; the logged request
    example (a text row, an image row in base64) embeds as the loader embeds the same inputs."""
    import base64
    from types import SimpleNamespace

    from packager.registry.pyfunc import ArtifactModel
    from packager.registry.signature import input_example
    from packager.runtime import load

    artifact = built["qwen2-vl"] / "qwen2-vl-onnx-fp32"
    served = ArtifactModel()
    served.load_context(SimpleNamespace(artifacts={"artifact": str(artifact)}, model_config={}))
    got = np.asarray(served.predict(None, [PHOTO], params={"verb": "encode"}))
    model = load(artifact)
    np.testing.assert_allclose(got, model.encode([PHOTO], image_strings=False), atol=1e-6)
    assert np.abs(got - model.encode([PHOTO])).max() > 1e-2  # the image itself embeds elsewhere
    # the logged request example, a text row and an image row (base64), as a served model takes it
    frame, params = input_example(model.manifest)
    rows = np.asarray(served.predict(None, frame, params=params))
    image = "data:image/png;base64," + frame["image"][1]
    np.testing.assert_allclose(rows, model.encode([frame["text"][0], {"image": image}]), atol=1e-6)
    assert base64.b64decode(frame["image"][1])[:4] == b"\x89PNG"
