"""A corpus of hostile and broken model folders, each made here from the tiny mean chain, each
built through the CLI: refused with a typed error and its exit code, nothing executed (canaries
in pickles and module code stay silent), nothing written (not even the output directory)."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from canaries import CANARY_ENV
from canaries import Canary as _Canary
from packager.cli import main


def _modules(folder: Path) -> list[dict]:
    return json.loads((folder / "modules.json").read_text())


def _edit_modules(edit: Callable[[list[dict]], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        entries = _modules(folder)
        edit(entries)
        (folder / "modules.json").write_text(json.dumps(entries))
    return apply


def _set(index: int, **values) -> Callable[[Path], None]:
    return _edit_modules(lambda entries: entries[index].update(values))


def _edit_json(name: str, **values) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        data.update(values)
        (folder / name).write_text(json.dumps(data))
    return apply


def _header(folder: Path) -> tuple[dict, bytes]:
    raw = (folder / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _write_header(folder: Path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def _lie_about_size(folder: Path) -> None:
    header, data = _header(folder)
    name = next(k for k in sorted(header) if k != "__metadata__")
    header[name]["data_offsets"][1] += 4  # claims 4 bytes more than its shape needs: overlaps the next
    _write_header(folder, header, data)


def _overlap(folder: Path) -> None:
    header, data = _header(folder)
    second = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])[1]
    begin, end = header[second]["data_offsets"]
    header[second]["data_offsets"] = [0, end - begin]  # reads the first tensor's bytes
    _write_header(folder, header, data)


def _drop_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    del tensors["encoder.layer.0.attention.output.LayerNorm.bias"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _rewrite_tensor(change: Callable) -> Callable[[Path], None]:
    """The folder's weights with one tensor replaced by ``change(tensor)``."""
    def apply(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        name = "encoder.layer.0.attention.self.query.weight"
        tensors[name] = change(tensors[name].clone())
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return apply


def _with(value: float, *, at: tuple = (0, 0)) -> Callable:
    def change(tensor):
        tensor[at] = value
        return tensor
    return change


def _pickle_weights(name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        target = folder / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(pickle.dumps({"weight": _Canary()}))
        if target.parent == folder:
            (folder / "model.safetensors").unlink()
    return apply


def _custom_module(type_: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / "evil.py").write_text(f"open(__import__('os').environ[{CANARY_ENV!r}], 'w').write('imported')\n"
                                        "class Evil:\n    pass\n")
        _set(1, type=type_)(folder)
    return apply


def _symlinked_module(folder: Path) -> None:
    outside = folder.parent / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    _set(1, path="linked")(folder)


def _index_outside(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder.parent / "shard.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "../shard.safetensors"}}))


# case -> (how to break the folder, extra CLI arguments, exit code, message)
CASES: dict[str, tuple[Callable[[Path], None], list[str], int, str]] = {
    # modules.json
    "modules.json not JSON": (lambda f: (f / "modules.json").write_text("[{"), [], 3, "not valid JSON"),
    "modules.json not a list": (lambda f: (f / "modules.json").write_text('{"0": "x"}'), [], 3, "non-empty list"),
    "modules.json wrong type": (_set(0, idx="0"), [], 3, "'idx' must be a int"),
    "modules.json entry missing a key": (_edit_modules(lambda e: e[1].pop("type")), [], 3, "'type' must be a str"),
    "modules.json duplicate entry": (_edit_modules(lambda e: e.append(dict(e[1]))), [], 3, "duplicate idx"),
    "module path with ..": (_set(1, path="../outside"), [], 4, "leaves the model folder"),
    "module path absolute": (_set(1, path="/etc"), [], 4, "leaves the model folder"),
    "module folder symlinked outside": (_symlinked_module, [], 4, "links outside"),
    "module folder missing": (_set(1, path="2_Nowhere"), [], 3, "its folder '2_Nowhere' is missing"),
    "unknown module type": (_set(1, type="my_pooling.Pooling"), [], 4, "not one of sentence-transformers' own"),
    "custom module code in the folder": (_custom_module("evil.Evil"), [], 4, "--trust-remote-code to import it"),
    "remote code reference": (_custom_module("someone/repo--evil.Evil"), [], 4, "code in another repository"),
    "remote code reference, trusted": (_custom_module("someone/repo--evil.Evil"), ["--trust-remote-code"], 4,
                                       "never fetches code"),
    # weights
    "pickle weights (pytorch_model.bin)": (_pickle_weights("pytorch_model.bin"), [], 4, "pickle weights only"),
    "pickle weights (*.pt) in a module": (_pickle_weights("1_Pooling/weights.pt"), [], 4, "pickle weights only"),
    "truncated safetensors": (lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:-100]), [], 3, "not a valid safetensors file .*cover"),
    "random bytes as safetensors": (lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)), [], 3,
                                    "not a valid safetensors file .*header length"),
    "safetensors header lies about a size": (_lie_about_size, [], 3, "needs 128 bytes, its data_offsets"),
    "safetensors tensors overlap": (_overlap, [], 3, "overlap or leave gaps"),
    "shard index pointing outside": (_index_outside, [], 4, "is not a file beside the index"),
    # weight values: named as the source's, before torch loads them or ranges and gates see their outputs
    "a NaN in a weight": (_rewrite_tensor(_with(float("nan"))), [], 3,
                          "model.safetensors: 1 tensor.s. hold NaN or Inf .*query.weight' .1 of 1024 values"),
    "an Inf in a weight": (_rewrite_tensor(_with(float("-inf"), at=(31, 31))), [], 3,
                           "model.safetensors: 1 tensor.s. hold NaN or Inf .*query.weight' .1 of 1024 values"),
    "int32 weights where the config says float32": (_rewrite_tensor(lambda t: (t * 1000).int()), [], 3,
                                                    "'encoder.layer.0.attention.self.query.weight' is I32, "
                                                    "loaded into the float32 parameter 0..*query.weight; integers"),
    "finite weights whose outputs overflow": (_rewrite_tensor(lambda t: t.fill_(3e38)), [], 3,
                                              "the reference .sentence-transformers. outputs NaN or Inf for .* inputs "
                                              "of encode.*the first being input 0"),
    "weight shapes disagree with the config": (_edit_json("config.json", intermediate_size=128), [], 3,
                                               "weight shapes disagree with the config"),
    "weight missing from the checkpoint": (_drop_tensor, [], 3, "missing from the checkpoint .* at random"),
    "config with more layers than the weights": (_edit_json("config.json", num_hidden_layers=3), [], 3,
                                                 "16 weight.s. missing from the checkpoint"),
    # configs and tokenizers
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{"), [], 3, "config.json: not valid JSON"),
    "no tokenizer files": (lambda f: (f / "tokenizer.json").unlink(), [], 3, "has no tokenizer"),
    "corrupt tokenizer.json": (lambda f: (f / "tokenizer.json").write_text('{"model": 1}'), [], 3,
                               "not a tokenizer the tokenizers library can read"),
    "max_seq_length beyond the position embeddings": (_edit_json("sentence_bert_config.json", max_seq_length=100),
                                                      [], 3, "max_seq_length 100 exceeds the 64 positions"),
    "max_seq_length of 0": (_edit_json("sentence_bert_config.json", max_seq_length=0), [], 3,
                            "max_seq_length must be a positive integer"),
    "max_seq_length of -5": (_edit_json("sentence_bert_config.json", max_seq_length=-5), [], 3,
                             "max_seq_length must be a positive integer"),
    "max_seq_length of '48'": (_edit_json("sentence_bert_config.json", max_seq_length="48"), [], 3,
                               "max_seq_length must be a positive integer"),
    "model_max_length of -5": (_edit_json("tokenizer_config.json", model_max_length=-5), [], 3,
                               "max_seq_length must be a positive integer"),
    # names and paths no system call takes
    "NUL in a module path": (_set(1, path="1_Pool\0ing"), [], 3, "not a usable path"),
    "a 5000-character module path": (_set(1, path="p" * 5000), [], 3, "not a usable path"),
    "a symlink loop": (lambda f: (f / "loop.json").symlink_to("loop.json"), [], 3, "cannot be followed"),
    "a file name that is not UTF-8": (lambda f: (f / os.fsdecode(b"bad\xff.txt")).write_text("x"), [], 3,
                                      "not UTF-8"),
    "modules.json is a directory": (lambda f: ((f / "modules.json").unlink(), (f / "modules.json").mkdir()), [], 3,
                                    "modules.json: a directory"),
    "safetensors header nested beyond reason": (lambda f: _write_header_bytes(f, b"[" * 100_000 + b"]" * 100_000),
                                                [], 3, "header is not JSON: RecursionError"),
}


def _write_header_bytes(folder: Path, header: bytes) -> None:
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.mark.parametrize("case", CASES)
def test_hostile_source_is_refused_and_nothing_runs(case, chain_copy, tmp_path, monkeypatch, capsys):
    breaks, args, code, message = CASES[case]
    canary = tmp_path / "canary"
    monkeypatch.setenv(CANARY_ENV, str(canary))
    breaks(chain_copy)
    out = tmp_path / "dist"
    assert main(["build", str(chain_copy), "--out", str(out), "-q", *args]) == code
    err = capsys.readouterr().err
    assert err.startswith("packager: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not canary.exists(), canary.read_text()
    assert not out.exists()


def test_a_router_structure_that_is_not_lists_of_names_is_refused(tiny_chains, tmp_path, capsys):
    import shutil

    folder = Path(shutil.copytree(tiny_chains["router-dense"], tmp_path / "router"))
    config_path = folder / "router_config.json"
    config = json.loads(config_path.read_text())
    route = next(iter(config["structure"]))
    config["structure"][route] = [config["structure"][route]]  # a list holding a list
    config_path.write_text(json.dumps(config))
    assert main(["build", str(folder), "--out", str(tmp_path / "dist"), "-q"]) == 3
    assert "must be a list of module names" in capsys.readouterr().err


def test_the_canaries_fire_when_their_code_runs(tmp_path, monkeypatch):
    """The control for the test above: unpickling the weights or importing the module does write."""
    monkeypatch.setenv(CANARY_ENV, str(tmp_path / "pickle"))
    pickle.loads(pickle.dumps({"weight": _Canary()}))
    assert (tmp_path / "pickle").read_text() == "pickle ran"
    _custom_module("evil.Evil")(_folder_with_modules(tmp_path / "folder"))
    subprocess.run([sys.executable, "-c", "import evil"], cwd=tmp_path / "folder", check=True,
                   env={**os.environ, CANARY_ENV: str(tmp_path / "module")})
    assert (tmp_path / "module").read_text() == "imported"


def _folder_with_modules(folder: Path) -> Path:
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x"},
                                                     {"idx": 1, "name": "1", "path": "1", "type": "y"}]))
    return folder
