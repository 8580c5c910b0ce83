"""A T5 encoder embedder (sentence-t5, GTR: T5EncoderModel, mean pooling, Dense, Normalize) builds
to ONNX. Its relative position bias, a parameter, reaches SDPA's mask: exported with parameters
that require grad, the exporter's passes disagree on SDPA's output layout and fail on a view
(packager.exporters.onnx._frozen)."""

from __future__ import annotations

import numpy as np
import torch

import tiny_models
from packager.exporters.onnx import _frozen
from packager.publish import import_loader
from packager.runtime.manifest import read_manifest
from packager.validators.texts import real_sentences


def test_a_t5_encoder_embedder_builds_to_onnx_and_passes_its_gate(tmp_path):
    from sentence_transformers import SentenceTransformer

    from packager.cli import main

    chain = tiny_models.save_chain(tmp_path / "chain", tiny_models.save_tiny_t5(tmp_path / "t5"), dense=1,
                                   normalize=True)
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "--format", "onnx", "-q"]) == 0
    artifact = tmp_path / "dist" / "chain-onnx-fp32"
    assert read_manifest(artifact).chain_kind.value == "SentenceTransformer"
    model = import_loader(artifact).load(artifact)  # the artifact's own loader: no torch
    reference = SentenceTransformer(str(chain), device="cpu")
    texts = real_sentences()[:16]
    np.testing.assert_allclose(model.encode(texts), reference.encode(texts), atol=1e-5)


def test_parameters_are_frozen_only_while_exported():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    module[1].bias.requires_grad_(False)
    with _frozen(module):
        assert not any(p.requires_grad for p in module.parameters())
    assert [p.requires_grad for p in module.parameters()] == [True, True, True, False]
