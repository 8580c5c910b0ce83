"""Property-based tests (hypothesis) of the two readers that take files from elsewhere: the
modules.json reader (a model folder from the internet) and the manifest reader (an artifact that
travelled). Whatever they are given, they return something valid or raise the package's own
typed error; nothing else escapes, nothing is imported, no path leaves its folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packager.chain import read_chain
from packager.chain.allow_list import MODULE_TYPES
from packager.errors import ArtifactIntegrityError, PackagerError
from packager.runtime.enums import ModuleKind
from packager.runtime.manifest import Manifest

# Reproducible in CI, no example database written into the repository.
PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Strings a hostile modules.json would try, next to real ones.
TYPES = st.sampled_from([
    *sorted(MODULE_TYPES)[:12],
    "os.system", "subprocess.Popen", "builtins.eval", "org/repo--module.Class", "repo--x.Y", "evil.Evil",
    "sentence_transformers.models.Nope", "", ".", "sentence_transformers.models.Transformer.__init__",
]) | st.text(max_size=30)
PATHS = st.sampled_from(["", "1_Pooling", "..", "../", "../outside", "/etc", "/", "1_Pooling/..", "1_Pooling/../..",
                         "a/../../b", "..\\x", "~", "$HOME", "1_Pooling/config.json", "nonexistent", "\x00"]) \
    | st.text(max_size=20)
ENTRY = st.fixed_dictionaries(
    {"idx": st.integers(-2, 5) | JSON, "name": st.sampled_from(["0", "1", "x"]) | JSON, "path": PATHS,
     "type": TYPES},
    optional={"extra": JSON},
)
MODULES_JSON = st.lists(ENTRY, min_size=0, max_size=4) | JSON


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_chains) -> Path:
    return Path(shutil.copytree(tiny_chains["mean"], tmp_path_factory.mktemp("prop") / "chain"))


@PROPERTIES
@given(content=MODULES_JSON)
def test_modules_json_reader_returns_a_safe_chain_or_a_typed_error(folder, content):
    # A fixture shared across examples: each example rewrites the one file it varies.
    (folder / "modules.json").write_text(json.dumps(content))
    imported = set(sys.modules)
    try:
        chain = read_chain(str(folder))
    except PackagerError:
        pass
    else:
        for module in chain.all_modules():
            assert (folder / module.path).resolve().is_relative_to(folder.resolve())
            assert module.kind is not ModuleKind.CUSTOM and module.type in MODULE_TYPES
    assert set(sys.modules) - imported <= {"tokenizers"}, set(sys.modules) - imported


@pytest.fixture(scope="module")
def manifest_data(tiny_artifacts) -> dict:
    return json.loads((tiny_artifacts["splade-max"] / "manifest.json").read_text())


def _mutate(data, draw) -> object:
    """Replace, drop or add one value somewhere in ``data`` (a JSON document)."""
    if isinstance(data, dict) and data and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data)))
        action = draw(st.sampled_from(["descend", "drop", "replace", "add"]))
        copy = dict(data)
        if action == "drop":
            copy.pop(key)
        elif action == "add":
            copy[draw(st.text(max_size=8))] = draw(JSON)
        elif action == "replace":
            copy[key] = draw(JSON)
        else:
            copy[key] = _mutate(data[key], draw)
        return copy
    if isinstance(data, list) and data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        return [*data[:i], _mutate(data[i], draw), *data[i + 1 :]]
    return draw(JSON | st.integers(min_value=2**63) | st.just(-(10**400)))


@PROPERTIES
@given(data=st.data())
def test_manifest_reader_returns_a_valid_manifest_or_an_integrity_error(manifest_data, data):
    document = _mutate(manifest_data, data.draw) if data.draw(st.integers(0, 4)) else data.draw(JSON)
    text = json.dumps(document)
    try:
        manifest = Manifest.from_json(text)
    except ArtifactIntegrityError:
        return
    assert Manifest.from_json(manifest.to_json()) == manifest
    for path in [f.path for f in manifest.files] + [r.graph for r in manifest.routes]:
        assert not Path(path).is_absolute() and ".." not in Path(path).parts


@PROPERTIES
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_manifest_reader_refuses_any_text_that_is_not_a_manifest(text):
    with pytest.raises(ArtifactIntegrityError):
        Manifest.from_json(text)
