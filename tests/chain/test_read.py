"""Reading saved chains safely: classification, allow-list, paths, pickle, hub ids."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from packager.chain import check_compilable, read_chain
from packager.chain.allow_list import MODULE_TYPES
from packager.errors import SourceError, UnsafeSourceError, UnsupportedModuleError
from packager.runtime.enums import ChainKind, ModuleKind


def _modules(folder: Path) -> list[dict]:
    return json.loads((folder / "modules.json").read_text())


def _write_modules(folder: Path, entries: list[dict]) -> Path:
    (folder / "modules.json").write_text(json.dumps(entries))
    return folder


def test_reads_and_classifies_a_saved_chain(tiny_chains):
    chain = read_chain(str(tiny_chains["max-dense-layernorm-normalize"]))
    assert chain.kind is ChainKind.SENTENCE_TRANSFORMER
    assert [m.kind for m in chain.modules] == [ModuleKind.TRANSFORMER, ModuleKind.POOLING, ModuleKind.DENSE,
                                               ModuleKind.LAYER_NORM, ModuleKind.NORMALIZE]
    assert chain.modules[1].config["pooling_mode"] == "max"
    assert chain.source.kind == "path" and chain.source.revision is None
    paths = {f.path for f in chain.files}
    assert {"modules.json", "model.safetensors", "tokenizer.json"} <= paths
    check_compilable(chain)


def test_every_allow_listed_type_is_a_real_sentence_transformers_class():
    """Each spelling must resolve (through sentence-transformers' own import, deprecated aliases
    included) to the class its kind names (Asym is Router's old name; CLIPModel, a Transformer
    subclass, its own); known modules that are not compiled resolve to the class they name."""
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.util.misc import import_from_string

    for type_path, kind in MODULE_TYPES.items():
        named = type_path.rsplit(".", 1)[1]
        expected = named if kind is ModuleKind.NOT_COMPILED or named == "CLIPModel" else kind.value
        found = import_from_string(type_path)
        assert found.__name__ == expected, type_path
        assert named != "CLIPModel" or issubclass(found, Transformer), type_path
    spellings = {kind: [t for t, k in MODULE_TYPES.items() if k is kind] for kind in set(MODULE_TYPES.values())}
    assert "sentence_transformers.models.Pooling" in spellings[ModuleKind.POOLING]
    assert "sentence_transformers.sentence_transformer.modules.pooling.Pooling" in spellings[ModuleKind.POOLING]
    assert "sentence_transformers.base.modules.normalize.Normalize" in spellings[ModuleKind.NORMALIZE]
    assert "sentence_transformers.sentence_transformer.modules.normalize.Normalize" in spellings[ModuleKind.NORMALIZE]


def test_old_type_paths_read_like_new_ones(chain_copy):
    entries = _modules(chain_copy)
    entries[0]["type"] = "sentence_transformers.models.Transformer"
    entries[1]["type"] = "sentence_transformers.models.Pooling"
    chain = read_chain(str(_write_modules(chain_copy, entries)))
    assert [m.kind for m in chain.modules] == [ModuleKind.TRANSFORMER, ModuleKind.POOLING]


def test_unknown_module_type_is_refused_with_the_supported_list(chain_copy):
    entries = _modules(chain_copy)
    entries[1]["type"] = "my_package.modules.EvilPooling"
    with pytest.raises(UnsupportedModuleError) as error:
        read_chain(str(_write_modules(chain_copy, entries)))
    message = str(error.value)
    assert "my_package.modules.EvilPooling" in message and "Pooling" in message and "--trust-remote-code" in message


def test_known_but_uncompiled_modules_are_named_not_called_foreign(chain_copy):
    entries = _modules(chain_copy)
    entries[1]["type"] = "sentence_transformers.multi_vector_encoder.modules.token_pooling.HierarchicalTokenPooling"
    chain = read_chain(str(_write_modules(chain_copy, entries)))
    with pytest.raises(UnsupportedModuleError, match="sentence-transformers' HierarchicalTokenPooling, which this "
                                                     "version does not compile: it clusters") as error:
        check_compilable(chain)
    assert "--trust-remote-code" not in str(error.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"text": {"truncation": "only_second"}}, r"\['truncation'\] = 'only_second': the runtime truncates longest-first"),
    ({"text": {"padding": False}}, r"\['padding'\] = False: batches without padding"),
    ({"text": {"stride": 4}}, r"\['text'\]\['stride'\] is not reproduced"),
    ({"common": {"max_length": 8}}, r"\['common'\] \['max_length'\] apply to every processor call"),
    ({"text": {"max_length": 0}}, r"\['max_length'\] must be a positive integer, got 0"),
])
def test_processing_the_runtime_would_not_reproduce_is_refused_saying_why(chain_copy, kwargs, match):
    """Per-task lengths and text settings that only change batch width compile (test_chat_and_static);
    what would change a text's tokens in a way the runtime does not reproduce is refused."""
    import json as json_

    config = chain_copy / "sentence_bert_config.json"
    config.write_text(json_.dumps({**json_.loads(config.read_text()), "query_length": 8, "processing_kwargs": kwargs}))
    with pytest.raises(UnsupportedModuleError, match=match):
        check_compilable(read_chain(str(chain_copy)))
    harmless = {"text": {"padding": True, "pad_to_multiple_of": 8}}
    config.write_text(json_.dumps({**json_.loads(config.read_text()), "processing_kwargs": harmless}))
    check_compilable(read_chain(str(chain_copy)))  # per-task lengths and harmless settings compile


def test_a_classifier_folder_without_modules_json_is_a_cross_encoder(backbones):
    chain = read_chain(str(backbones.classifier))
    assert chain.kind.value == "CrossEncoder" and [m.transformer_task for m in chain.modules] == [
        "sequence-classification"]
    check_compilable(chain)


def test_unknown_module_type_is_custom_with_trust_remote_code(chain_copy):
    entries = _modules(chain_copy)
    entries[1]["type"] = "custom_pooling.MyPooling"
    chain = read_chain(str(_write_modules(chain_copy, entries)), trust_remote_code=True)
    assert chain.modules[1].kind is ModuleKind.CUSTOM
    check_compilable(chain)  # trusted custom modules are exported if traceable, then gated like the rest


@pytest.mark.parametrize("bad_path", ["../outside", "/etc", "1_Pooling/../../x", "..\\x"])
def test_module_paths_leaving_the_folder_are_refused(chain_copy, bad_path):
    entries = _modules(chain_copy)
    entries[1]["path"] = bad_path
    with pytest.raises(UnsafeSourceError, match="leaves the model folder"):
        read_chain(str(_write_modules(chain_copy, entries)))


def test_module_path_symlinked_outside_is_refused(chain_copy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (chain_copy / "evil").symlink_to(outside, target_is_directory=True)
    entries = _modules(chain_copy)
    entries[1]["path"] = "evil"
    with pytest.raises(UnsafeSourceError, match="outside"):
        read_chain(str(_write_modules(chain_copy, entries)))


def test_file_symlinked_outside_is_refused(chain_copy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (chain_copy / "notes.txt").symlink_to(secret)
    with pytest.raises(UnsafeSourceError, match="links outside"):
        read_chain(str(chain_copy))


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ("{}", "non-empty list"),
    ("[]", "non-empty list"),
    ('[{"idx": "0", "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]', "'idx' must be"),
    ('[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
     ' {"idx": 1, "name": "0", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]',
     "duplicate name"),
])
def test_malformed_modules_json_is_refused(chain_copy, content, match):
    (chain_copy / "modules.json").write_text(content)
    with pytest.raises(SourceError, match=match):
        read_chain(str(chain_copy))


def test_folder_without_modules_json_is_not_a_chain(tmp_path):
    with pytest.raises(SourceError, match=r"no modules.json"):
        read_chain(str(tmp_path))


def test_pickle_only_weights_are_refused_unless_allowed(chain_copy):
    (chain_copy / "model.safetensors").rename(chain_copy / "pytorch_model.bin")
    with pytest.raises(UnsafeSourceError, match=r"pickle weights only.*--allow-pickle"):
        read_chain(str(chain_copy))
    assert read_chain(str(chain_copy), allow_pickle=True).allow_pickle


def test_pickle_beside_safetensors_is_not_pickle_only(chain_copy):
    (chain_copy / "training_args.bin").write_bytes(b"\x80\x04N.")
    read_chain(str(chain_copy))


def test_other_safetensors_do_not_excuse_pickle_weights(tmp_path, tiny_chains):
    """Dense loads pytorch_model.bin unless model.safetensors is there; x.safetensors does not count."""
    chain = Path(shutil.copytree(tiny_chains["cls-dense"], tmp_path / "chain"))
    dense = chain / "2_Dense"
    (dense / "model.safetensors").rename(dense / "x.safetensors")
    (dense / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeSourceError, match=r"module '2'.*pytorch_model.bin"):
        read_chain(str(chain))


def test_a_chain_without_pooling_is_refused_before_export(chain_copy, tmp_path, capsys):
    from packager.cli import main

    _write_modules(chain_copy, _modules(chain_copy)[:1])
    assert main(["build", str(chain_copy), "--out", str(tmp_path / "dist")]) == 4
    assert "produces no 'sentence_embedding'" in capsys.readouterr().err
    assert not any((tmp_path / "dist").glob("*-onnx-fp32"))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no such folder"):
        read_chain(str(tmp_path / "nope" / "../x y"))
    with pytest.raises(SourceError, match="local Hugging Face cache"):
        read_chain("some-org/not-cached-model")


def test_hub_id_resolves_from_the_local_cache(tmp_path, tiny_chains, monkeypatch):
    """A cache laid out as huggingface_hub writes it: snapshot files are symlinks into blobs/."""
    repo = tmp_path / "hub" / "models--acme--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    for file in Path(tiny_chains["mean"]).rglob("*"):
        if file.is_file():
            rel = file.relative_to(tiny_chains["mean"])
            blob = repo / "blobs" / str(abs(hash(rel.as_posix())))
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, blob)
            (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    chain = read_chain("acme/tiny")
    assert chain.source.kind == "hub" and chain.source.revision == commit
    assert chain.source.folder == snapshot
    assert [m.kind for m in chain.modules] == [ModuleKind.TRANSFORMER, ModuleKind.POOLING]


def test_resolve_tokenizer_uses_max_seq_length_not_model_max_length(tiny_chains):
    from packager.chain import load_reference
    from packager.chain.tokenizer import resolve_tokenizer

    chain = read_chain(str(tiny_chains["mean"]))
    reference = load_reference(chain)
    spec, tokenizer_json = resolve_tokenizer(chain.modules[0], reference[0])
    assert spec.max_length == 48  # sentence_bert_config.json, not the tokenizer's own limit
    assert spec.padding_side.value == "right" and spec.truncation_side.value == "right"
    assert spec.lowercase is True and spec.pad_token == "[PAD]" and spec.add_special_tokens
    assert {2, 3} <= set(spec.special_ids)  # [CLS], [SEP]
    assert '"model"' in tokenizer_json
