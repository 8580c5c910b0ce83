"""Files that are not what they claim: every file a build or a load reads, replaced by a FIFO (a
reader that blocks forever), a directory, a link loop or a link to /dev/zero (a reader that
never ends). Each is refused with its typed error, its exit code and a message that says what
the file is, within a bound (a hang is a failure: SIGALRM ends it), and nothing is written."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from packager.cli import main
from packager.runtime import ArtifactIntegrityError, load

BOUND_S = 30  # generous: each case is refused before any model is loaded, in well under a second


@contextmanager
def bounded(seconds: int = BOUND_S) -> Iterator[None]:
    """Fail, rather than hang, when the block takes longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: a reader blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _loop(path: Path) -> None:
    path.symlink_to(path.name)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


REPLACEMENTS: dict[str, tuple[Callable[[Path], None], str]] = {
    # how to replace a file, and what the message says it is
    "fifo": (_fifo, "FIFO"),
    "directory": (_directory, "directory"),
    "link loop": (_loop, "link"),
    "link to /dev/zero": (_dev_zero, "link"),
}
# Every file of the tiny mean chain as sentence-transformers saves it (checked below, so a new
# file in the format is not silently left out of this corpus).
SOURCE_FILES = ("modules.json", "sentence_bert_config.json", "config.json", "config_sentence_transformers.json",
                "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "1_Pooling/config.json")


def _replace(path: Path, how: Callable[[Path], None]) -> None:
    if path.is_dir() and not path.is_symlink():
        raise AssertionError(f"{path} is a directory")
    path.unlink()
    how(path)


def test_the_source_corpus_covers_every_file_of_the_chain(tiny_chains):
    folder = tiny_chains["mean"]
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == set(SOURCE_FILES)


# A directory named README.md is harmless (nothing reads the card); every other pair is refused.
SOURCE_CASES = [(f, r) for f in SOURCE_FILES for r in REPLACEMENTS if (f, r) != ("README.md", "directory")]


@pytest.mark.parametrize("file,replacement", SOURCE_CASES)
def test_a_source_file_that_is_not_a_regular_file_is_refused(file, replacement, chain_copy, tmp_path, capsys):
    how, kind = REPLACEMENTS[replacement]
    _replace(chain_copy / file, how)
    out = tmp_path / "dist"
    with bounded():
        code = main(["build", str(chain_copy), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code in (3, 4), err
    assert err.startswith("packager: error: ") and "Traceback" not in err
    assert file.rsplit("/", 1)[-1] in err and kind in err.replace("symbolic link", "link"), err
    assert not out.exists()


@pytest.mark.parametrize("replacement", REPLACEMENTS)
@pytest.mark.parametrize("option", ["--validation-data", "--calibration-data", "--spec"])
def test_an_input_file_that_is_not_a_regular_file_is_refused(option, replacement, tiny_chains, tmp_path, capsys):
    how = REPLACEMENTS[replacement][0]
    path = tmp_path / "inputs.txt"
    how(path)
    out = tmp_path / "dist"
    argv = ["build", "--spec", str(path)] if option == "--spec" else \
        ["build", str(tiny_chains["mean"]), option, str(path), "--out", str(out)]
    with bounded():
        code = main([*argv, "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "inputs.txt" in err and "Traceback" not in err
    assert not out.exists()


def _artifact_files(artifact: Path) -> list[str]:
    return sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def artifact_files(tiny_artifacts) -> list[str]:
    return _artifact_files(tiny_artifacts["mean"])


def test_the_artifact_corpus_covers_the_manifest_graph_tokenizer_and_loader(artifact_files):
    assert {"manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json", "loader/__init__.py",
            "loader/__pycache__"} <= set(artifact_files)


@pytest.mark.parametrize("replacement", REPLACEMENTS)
def test_an_artifact_file_that_is_not_a_regular_file_is_refused(replacement, artifact_files, copy_artifact, capsys):
    """Every file of the artifact in turn (one parametrized case per replacement keeps the copies
    cheap): the loader and `packager inspect` refuse it with exit 8."""
    how, kind = REPLACEMENTS[replacement]
    for file in artifact_files:
        artifact = copy_artifact()
        _replace(artifact / file, how)
        with bounded(), pytest.raises(ArtifactIntegrityError) as error:
            load(artifact)
        message = str(error.value).replace("symbolic link", "link")
        assert kind in message or f"{file}: missing" in message, (file, message)
        with bounded():
            assert main(["inspect", str(artifact)]) == 8, file
        assert "Traceback" not in capsys.readouterr().err
        shutil.rmtree(artifact)
