"""A backbone whose code is in its folder (``auto_map`` in config.json) is built only with
--trust-remote-code: without it the build is refused before the reference loads (so before any code
from the folder is imported) and before export, with the reason and the flag to pass. With it, the
architecture matrix builds and gates it (tests/test_architectures.py, the remote-code row)."""

from __future__ import annotations

import pytest

import tiny_decoders as td
from packager.cli import main


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-code")
    return td.save_remote_code_encoder(root / "chain", root / "scratch")


def test_a_remote_code_backbone_is_refused_without_trust_remote_code(chain, tmp_path, monkeypatch, capsys):
    import packager.builder.pipeline as pipeline
    import packager.exporters.onnx as onnx_exporter

    def never(*_args, **_kwargs):
        raise AssertionError("reached past the refusal")

    monkeypatch.setattr(pipeline, "prepare", never)  # loads the reference, importing the folder's code
    monkeypatch.setattr(onnx_exporter, "_export", never)
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "-q"]) == 4
    err = capsys.readouterr().err
    assert "module '0': its config.json maps the model to code in the folder (auto_map)" in err
    assert "Pass --trust-remote-code to build it" in err


def test_inspect_names_the_remote_code_backbone_and_why_it_does_not_compile_untrusted(chain, capsys):
    import json

    assert main(["inspect", str(chain), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (backbone,) = info["backbones"]
    assert (backbone["module"], backbone["model_type"], backbone["remote_code"]) == ("0", "tiny_rope", True)
    assert backbone["verdict"].startswith("untested: tiny_rope runs code from the folder")
    assert "Pass --trust-remote-code to build it" in info["compilable"]
