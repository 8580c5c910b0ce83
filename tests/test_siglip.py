"""SigLIP-style chains: a text+image Transformer whose text tower pools the last position whatever
the attention mask, and whose vision tower pools with nn.MultiheadAttention. Built to ONNX fp32
with its texts padded to max_length, it passes the default gate and the artifact's loader matches
sentence-transformers on texts (alone or in any batch) and images; saved with sentence-transformers'
default padding, where a text's embedding depends on its batch, it is refused before export."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_models as tm
from packager.builder.options import BuildOptions
from packager.builder.pipeline import build
from packager.errors import UnsupportedModuleError
from packager.publish import import_loader
from packager.runtime.enums import Format
from packager.runtime.manifest import read_manifest
from packager.validators.image_samples import real_images

TEXTS = ["a portrait of a woman", "a logo", "", "a present wrapped in paper, with a long ribbon around it twice"]


def _options(out, name: str) -> BuildOptions:
    return BuildOptions(formats=(Format.ONNX,), out=out, name=name, measure_speed=False, write_reports=False)


def test_siglip_builds_to_onnx_and_matches_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    chain = tm.save_siglip(tmp_path / "siglip")
    build(str(chain), _options(tmp_path / "dist", "siglip"))
    artifact = tmp_path / "dist" / "siglip-onnx-fp32"
    manifest = read_manifest(artifact)
    assert manifest.parity.status.value == "passed", manifest.parity
    assert manifest.parity.metrics["images.similarity_rel_diff"] < 1e-4
    assert manifest.route("text").tokenizer.pad_to_max_length
    assert manifest.route("image").tokenizer is None

    model, reference = import_loader(artifact).load(artifact), SentenceTransformer(str(chain), device="cpu")
    images = list(real_images().values())
    want = reference.encode(TEXTS)
    for what, inputs in (("texts", TEXTS), ("images", images)):
        np.testing.assert_allclose(np.asarray(model.encode(inputs)), reference.encode(inputs), rtol=1e-4, atol=1e-5,
                                   err_msg=what)
    # A text's embedding is its own: alone, in another batch, or in batches of one.
    np.testing.assert_allclose(np.asarray(model.encode(TEXTS[1:2])), want[1:2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.encode(TEXTS, batch_size=1)), want, rtol=1e-4,
                               atol=1e-5)


def test_siglip_with_batch_wide_padding_is_refused_before_export(tmp_path, monkeypatch):
    import torch

    def exported(*_, **__):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(torch.onnx, "export", exported)
    chain = tm.save_siglip(tmp_path / "siglip", fixed_padding=False)
    with pytest.raises(UnsupportedModuleError, match=r"pools the last position.*'padding': 'max_length'") as raised:
        build(str(chain), _options(tmp_path / "dist", "siglip"))
    assert raised.value.exit_code == 4
    assert not (tmp_path / "dist" / "siglip-onnx-fp32").exists()


def test_siglip2_is_refused_before_export_naming_its_image_processor(tmp_path, monkeypatch):
    """SigLIP2's NaFlex processor resizes each image to its own patch grid, which the runtime's
    fixed-crop image pipeline does not reproduce: refused, before any export, saying so."""
    import torch

    def exported(*_, **__):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(torch.onnx, "export", exported)
    chain = tm.save_siglip2(tmp_path / "siglip2")
    with pytest.raises(UnsupportedModuleError, match=r"route 'image': Siglip2ImageProcessorPil has its own "
                                                     r"_preprocess.*which the runtime does not reproduce") as raised:
        build(str(chain), _options(tmp_path / "dist", "siglip2"))
    assert raised.value.exit_code == 4
