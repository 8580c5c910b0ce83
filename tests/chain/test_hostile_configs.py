"""Configs that name files outside the model folder, and module folders that escape the checks.

The corpus is generated: every config file of the tiny chains, every key that names a file or
folder (the kinds of key sentence-transformers and transformers take), at the top level and in
the argument tables, each pointing outside the folder in each way a library could read it.
Each build is refused with exit 4 naming the file and key, before any library read the folder:
nothing is written and the outside file's contents appear nowhere."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from canaries import CANARY_ENV
from canaries import Canary as _Canary
from packager.chain import read_chain
from packager.cli import main
from packager.errors import UnsafeSourceError

SECRET = "outside-secret-token"
# Where a path-naming key may sit: (config file, the table inside it, or None for its top level).
PLACES = [
    ("sentence_bert_config.json", "tokenizer_args"), ("sentence_bert_config.json", "processor_kwargs"),
    ("sentence_bert_config.json", "model_args"), ("sentence_bert_config.json", "config_kwargs"),
    ("sentence_bert_config.json", None), ("tokenizer_config.json", None), ("config.json", None),
    ("config_sentence_transformers.json", None), ("1_Pooling/config.json", None),
]
KEYS = ["vocab_file", "tokenizer_file", "merges_file", "special_tokens_map_file", "cache_dir",
        "base_model_name_or_path", "tokenizer_name_or_path", "subfolder", "fast_tokenizer_files"]


def _values(tmp_path: Path, folder: Path) -> dict[str, str]:
    """How a value can point outside the folder; the relative one exists in the working
    directory, where open() would read it."""
    outside = tmp_path / "outside.txt"
    outside.write_text(f"{SECRET}\n" * 50)
    (tmp_path / "vocab.txt").write_text(f"{SECRET}\n")
    return {"absolute": str(outside), "dotdot": f"../{outside.name}", "cwd-relative": "vocab.txt",
            "missing absolute": "/nonexistent/stale/tokenizer.json"}


def _set(folder: Path, place: tuple[str, str | None], key: str, value) -> None:
    file, table = place
    data = json.loads((folder / file).read_text())
    target = data.setdefault(table, {}) if table else data
    target[key] = [value] if key.endswith("files") else value
    (folder / file).write_text(json.dumps(data))


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("place", PLACES, ids=lambda p: f"{p[0]}:{p[1] or 'top'}")
def test_a_config_path_outside_the_folder_is_refused(place, key, chain_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    values = _values(tmp_path, chain_copy)
    for how, value in values.items():
        _set(chain_copy, place, key, value)
        out = tmp_path / "dist"
        assert main(["build", str(chain_copy), "--out", str(out), "-q"]) == 4, how
        err = capsys.readouterr().err
        assert place[0] in err and key in err and "not inside the model folder" in err, (how, err)
        assert not out.exists()


def test_the_reported_attack_ships_nothing(chain_copy, tmp_path, monkeypatch, capsys):
    """No tokenizer.json, a dummy vocab.txt, and tokenizer_args.vocab_file naming an outside file:
    refused; nothing published, nothing registered, the outside file's lines nowhere."""
    monkeypatch.chdir(tmp_path)
    (chain_copy / "tokenizer.json").unlink()
    (chain_copy / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    _values(tmp_path, chain_copy)
    _set(chain_copy, ("sentence_bert_config.json", None), "tokenizer_args",
         {"vocab_file": str(tmp_path / "outside.txt")})
    out = tmp_path / "dist"
    argv = ["build", str(chain_copy), "--out", str(out), "--register", "leak", "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "-q"]
    assert main(argv) == 4
    assert "tokenizer_args.vocab_file" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "mlartifacts").exists()


def test_paths_inside_the_folder_and_descriptive_names_are_accepted(chain_copy, tmp_path, monkeypatch):
    """The control: a key naming a file inside the folder (read the same from the working
    directory), and the descriptive _name_or_path / name_or_path that transformers overwrites."""
    monkeypatch.chdir(tmp_path)
    _set(chain_copy, ("tokenizer_config.json", None), "fast_tokenizer_files", "tokenizer.json")
    _set(chain_copy, ("tokenizer_config.json", None), "name_or_path", "/somewhere/else/entirely")
    _set(chain_copy, ("config.json", None), "_name_or_path", "/home/someone/model")
    chain = read_chain(str(chain_copy))
    assert [m.name for m in chain.modules] == ["0", "1"]
    _set(chain_copy, ("tokenizer_config.json", None), "special_tokens_map_file", None)  # null: nothing named
    read_chain(str(chain_copy))
    _set(chain_copy, ("tokenizer_config.json", None), "tokenizer_file", "../chain/tokenizer.json")
    with pytest.raises(UnsafeSourceError, match="tokenizer_file"):
        read_chain(str(chain_copy))


def _move_module(folder: Path, index: int, into: str) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    old = folder / modules[index]["path"]
    new = folder / into / old.name
    new.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(old, new)
    modules[index]["path"] = f"{into}/{old.name}"
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize("skipped", [".git", ".cache", "__pycache__"])
def test_modules_in_unchecked_folders_are_refused(skipped, chain_copy, tmp_path, monkeypatch, capsys):
    """A pickle-only module, a link leaving the folder, a whole Transformer: none of them may
    hide in a folder that the checks and the digests skip."""
    monkeypatch.setenv(CANARY_ENV, str(tmp_path / "canary"))
    _move_module(chain_copy, 1, skipped)
    pooling = chain_copy / skipped / "1_Pooling"
    (pooling / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Canary()}))
    (tmp_path / "elsewhere.safetensors").write_bytes(b"\0" * 16)
    (pooling / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    out = tmp_path / "dist"
    assert main(["build", str(chain_copy), "--out", str(out), "-q"]) == 4
    assert f"lies in {skipped!r}" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "canary").exists()


def test_a_transformer_in_an_unchecked_folder_is_refused(chain_copy, tmp_path, capsys):
    modules = json.loads((chain_copy / "modules.json").read_text())
    git = chain_copy / ".git"
    git.mkdir()
    for item in list(chain_copy.iterdir()):
        if item.name not in (".git", "modules.json", "1_Pooling"):
            shutil.move(item, git / item.name)
    modules[0]["path"] = ".git"
    (chain_copy / "modules.json").write_text(json.dumps(modules))
    assert main(["build", str(chain_copy), "--out", str(tmp_path / "dist"), "-q"]) == 4
    assert "lies in '.git'" in capsys.readouterr().err


def test_a_module_folder_reached_through_a_link_is_refused(chain_copy, tmp_path, capsys):
    """Inside the folder, but a link: its files would not be walked, checked or hashed."""
    (chain_copy / "1_Pooling").rename(chain_copy / "real_pooling")
    (chain_copy / "1_Pooling").symlink_to("real_pooling", target_is_directory=True)
    assert main(["build", str(chain_copy), "--out", str(tmp_path / "dist"), "-q"]) == 4
    assert "a link to a directory" in capsys.readouterr().err
