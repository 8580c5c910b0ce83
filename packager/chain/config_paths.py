"""Paths named inside a model folder's configs, checked before any library reads them.

sentence-transformers and transformers take file and folder arguments from the configs they
read (``tokenizer_args.vocab_file``, ``tokenizer_file``, ``base_model_name_or_path``...) and
open them as given: an absolute path or ``..`` reads outside the folder, and a relative path is
opened relative to the working directory, not the folder. So every value of a key that names a
file or folder, in every JSON file of the folder, must name something inside the folder, and
name the same thing whichever way a library reads it; anything else is refused.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from packager.errors import SourceError, UnsafeSourceError
from packager.runtime.files import read_json

# Keys whose values are files or folders to open: *_file, *_path, *_dir, subfolder and plurals.
PATH_KEY = re.compile(r"(?:^|_)(?:files?|paths?|dirs?|directory|folder|subfolder)$")
# Descriptive keys that the loaders overwrite with the folder they load from, whatever the file
# says (transformers: config._name_or_path and the tokenizer's name_or_path).
DESCRIPTIVE = frozenset({"_name_or_path", "name_or_path"})
# tokenizer.json is read by the tokenizers library, which follows no paths; modules.json's
# "path" entries are module folders, checked as such.
_NOT_CONFIGS = frozenset({"tokenizer.json", "modules.json"})
_LIMIT = 64 << 20


def check_config_paths(folder: Path, boundary: Path, files: list[str]) -> None:
    """Refuse every path-naming value, in every JSON file among ``files`` (relative to
    ``folder``), that does not name a file or folder inside ``boundary`` (the folder, or a
    cached model's cache entry); name each one."""
    problems = []
    for rel in files:
        name = PurePosixPath(rel).name
        if not rel.endswith(".json") or name in _NOT_CONFIGS or rel.endswith(".safetensors.index.json"):
            continue
        config = read_json(folder / rel, limit=_LIMIT, error=SourceError)
        for key, value in _path_values(config, ""):
            if not _inside(boundary, (folder / rel).parent, value):
                problems.append(f"{rel}: {key} = {value[:120]!r}")
    if problems:
        raise UnsafeSourceError(
            "configs name files or folders that are not inside the model folder, which sentence-transformers or "
            "transformers would read:\n  " + "\n  ".join(problems[:20])
            + "\nA saved model finds its files by their standard names: remove these keys (paths saved on another "
            "machine are stale), or copy the files into the folder and name them relative to it."
        )


def _path_values(value: Any, where: str):
    """(key path, string) for every string under a path-naming key, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and PATH_KEY.search(key) and key not in DESCRIPTIVE:
                yield from ((k, v) for k, v in _strings(item, here) if v)
            else:
                yield from _path_values(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _path_values(item, f"{where}[{i}]")


def _strings(value: Any, where: str):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")


def _inside(boundary: Path, base: Path, value: str) -> bool:
    """``value`` names an existing file or folder inside ``boundary``, read relative to the
    config's own folder, and, read relative to the working directory (as open() would), names
    that same file or nothing."""
    pure = PurePosixPath(value)
    if "\0" in value or "\\" in value or pure.is_absolute() or ".." in pure.parts or value.startswith("~"):
        return False
    try:
        target = (base / value).resolve(strict=True)
        from_cwd = Path(value).resolve() if Path(value).exists() else None
    except (OSError, RuntimeError, ValueError):
        return False
    return target.is_relative_to(boundary) and from_cwd in (None, target)
