"""Qwen-VL chains (issue 36), as far as they go: the tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL chains
are saved by sentence-transformers and loaded as the build loads a reference, in .venv-vl (their
processors need torchvision); there, on chat messages mixing texts and images, the runtime's
patching, image token counts and the vision tower's and language model's positions are put beside
the processor's and the model's own (tests/vl_reference.py). The build itself still refuses these
chains."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tiny_vl import MAX_PIXELS, VL_FAMILIES

SCRIPT = Path(__file__).with_name("vl_reference.py")


@pytest.fixture(scope="module")
def compared(vl_python, tmp_path_factory) -> dict:
    run = subprocess.run([str(vl_python), str(SCRIPT), str(tmp_path_factory.mktemp("vl"))], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


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
