"""A T5 encoder's relative position bias, a parameter, reaches SDPA's mask: exported with parameters
that require grad, the exporter's passes disagree on SDPA's output layout and fail on a view, so
the export runs with them frozen (packager.exporters.onnx._frozen). The T5 row of the architecture
matrix (tests/test_architectures.py) builds a T5 encoder embedder end to end."""

from __future__ import annotations

import torch

from packager.exporters.onnx import _frozen


def test_parameters_are_frozen_only_while_exported():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    module[1].bias.requires_grad_(False)
    with _frozen(module):
        assert not any(p.requires_grad for p in module.parameters())
    assert [p.requires_grad for p in module.parameters()] == [True, True, True, False]
