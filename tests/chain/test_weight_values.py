"""Weight values read before torch loads them (``packager.chain.weight_values``), on safetensors
files written here: every float dtype's NaN and Inf found by their bits, chunk by chunk; integer
tensors refused where they load into float parameters, and let through as buffers; and the
reference's non-finite outputs found in every shape sentence-transformers returns them
(``non_finite_items``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from packager.chain import weight_values
from packager.chain.weight_values import check_weight_values, integer_parameters
from packager.errors import SourceError
from packager.validators.parity import non_finite_items


def _save(folder: Path, tensors: dict, config: dict | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors")
    return folder / "model.safetensors"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2,
                                   torch.float8_e4m3fn])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_value_is_found_in_every_float_dtype(tmp_path, dtype, value):
    if value != "nan" and dtype == torch.float8_e4m3fn:  # no infinity in e4m3fn: it saturates to NaN
        value = "nan"
    tensor = torch.full((4, 5), 0.5).to(dtype)
    tensor[3, 4] = float(value)
    path = _save(tmp_path, {"ok": torch.ones(3, dtype=dtype), "bad": tensor})
    with pytest.raises(SourceError, match=r"x: 1 tensor\(s\) hold NaN or Inf values: 'bad' \(1 of 20 values\)"):
        check_weight_values(path, "x")


def test_finite_extremes_pass(tmp_path):
    """The largest finite values and the smallest subnormals have not every exponent bit set."""
    tensors = {str(dtype): torch.tensor([torch.finfo(dtype).max, torch.finfo(dtype).min, torch.finfo(dtype).tiny, 0.0,
                                         -0.0], dtype=torch.float64).to(dtype)
               for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2,
                             torch.float8_e4m3fn)}
    check_weight_values(_save(tmp_path, tensors), "x")


def test_values_are_read_chunk_by_chunk_and_none_is_missed(tmp_path, monkeypatch):
    """Memory is bounded by the chunk size, not the tensor's: NaNs at both ends of the last chunk
    and of a chunk boundary are all counted."""
    monkeypatch.setattr(weight_values, "CHUNK_BYTES", 64 + 3)  # not a multiple of 4: rounded down to whole values
    tensor = torch.zeros(1000)
    for i in (0, 15, 16, 999):
        tensor[i] = float("nan")
    reads = []
    real_frombuffer = np.frombuffer
    monkeypatch.setattr(np, "frombuffer",
                        lambda chunk, dtype: reads.append(len(chunk)) or real_frombuffer(chunk, dtype))
    with pytest.raises(SourceError, match=r"'bad' \(4 of 1000 values\)"):
        check_weight_values(_save(tmp_path, {"bad": tensor}), "x")
    assert max(reads) == 64 and sum(reads) == 4000


def test_every_bad_tensor_is_named_in_one_error(tmp_path):
    tensors = {f"t{i}": torch.tensor([float("nan"), 1.0]) for i in range(6)}
    with pytest.raises(SourceError, match=r"6 tensor\(s\) hold NaN or Inf values: 't0' \(1 of 2 values\), .* 2 more"):
        check_weight_values(_save(tmp_path, tensors), "x")


def test_integer_tensors_are_named_where_they_load_into_float_parameters(tmp_path):
    """Index buffers, counters and quantized weights are buffers: only a tensor whose name ends
    a float parameter's (maybe less a ``bert.`` prefix the loaded class strips) is named."""
    _save(tmp_path / "0_Transformer", {"bert.encoder.query.weight": torch.ones(2, 2, dtype=torch.int32),
                                       "bert.embeddings.position_ids": torch.arange(8).unsqueeze(0),
                                       "qweight": torch.ones(4, dtype=torch.int32)})
    _save(tmp_path / "2_Dense", {"linear.weight": torch.ones(2, 2, dtype=torch.int8),
                                 "bn.num_batches_tracked": torch.tensor(3), "linear.bias": torch.ones(2)})
    parameters = {"0.auto_model.encoder.query.weight": "float32", "2.linear.weight": "bfloat16",
                  "2.linear.bias": "bfloat16"}
    files = ["0_Transformer/model.safetensors", "2_Dense/model.safetensors", "0_Transformer/config.json"]
    assert integer_parameters(tmp_path, files, parameters) == [
        "0_Transformer/model.safetensors: 'bert.encoder.query.weight' is I32, loaded into the float32 parameter "
        "0.auto_model.encoder.query.weight",
        "2_Dense/model.safetensors: 'linear.weight' is I8, loaded into the bfloat16 parameter 2.linear.weight"]


def test_non_finite_outputs_are_found_in_every_shape_the_reference_returns():
    nan = float("nan")
    assert non_finite_items(np.array([[1.0, 2.0], [nan, 0.0], [1.0, np.inf]], dtype=np.float32)) == [1, 2]
    assert non_finite_items(torch.tensor([[1.0], [nan]], dtype=torch.bfloat16)) == [1]
    assert non_finite_items(np.array([0.5, nan])) == [1]  # cross-encoder scores
    assert non_finite_items([np.ones((3, 2)), np.array([[1.0, nan]]), np.ones((0, 2))]) == [1]  # token matrices
    sparse = torch.sparse_coo_tensor([[0, 2, 2], [1, 3, 4]], [1.0, 2.0, -np.inf], (3, 5), check_invariants=True)
    assert non_finite_items(sparse) == [2]
    assert non_finite_items([{"sentence_embedding": torch.tensor([nan]), "input_ids": torch.tensor([1])},
                             {"sentence_embedding": torch.tensor([1.0])}]) == [0]
    assert non_finite_items(np.ones((2, 3))) == [] and non_finite_items(["text"]) == []
