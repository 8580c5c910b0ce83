"""Qwen-VL chains (issue 36), as far as they go: the tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL chains
are saved by sentence-transformers and loaded as the build loads a reference, in .venv-vl (their
processors need torchvision); there, on chat messages mixing texts and images, the runtime's
patching, image token counts and M-RoPE positions are put beside the processor's and the model's
own (tests/vl_reference.py). The build itself still refuses these chains."""

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
    squared; token types; M-RoPE positions against the model's get_rope_index. The images include
    one resized to exactly the most pixels; the reference encodes the messages."""
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
