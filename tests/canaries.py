"""Canaries for the hostile corpora: objects and code that, if anything ever runs them, write the
file named in $PACKAGER_TEST_CANARY, so a test can prove that nothing from a folder ran."""

from __future__ import annotations

from pathlib import Path

CANARY_ENV = "PACKAGER_TEST_CANARY"


class Canary:
    """Unpickling this writes the file named in $PACKAGER_TEST_CANARY: proof that pickle ran."""

    def __reduce__(self):
        return (exec, (f"open(__import__('os').environ[{CANARY_ENV!r}], 'w').write('pickle ran')",))


def canary_code(what: str) -> str:
    """Python source that writes ``what`` to the file named in $PACKAGER_TEST_CANARY."""
    return f"open(__import__('os').environ[{CANARY_ENV!r}], 'w').write({what!r})\n"


def plant_pyc(artifact: Path, module: str) -> None:
    """What the hostile corpus did to an artifact: the loader's placeholder ``__pycache__`` file
    swapped for a folder holding a timestamp-based pyc of ``loader/<module>.py`` that carries a
    canary, stamped with the source's mtime and size so Python takes it for the source's cache."""
    import importlib.util
    import marshal

    source = artifact / "loader" / f"{module}.py"
    (artifact / "loader" / "__pycache__").unlink()  # the placeholder file
    target = Path(importlib.util.cache_from_source(str(source)))
    target.parent.mkdir()
    stat = source.stat()
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + int(stat.st_mtime).to_bytes(4, "little") \
        + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    target.write_bytes(header + marshal.dumps(compile(canary_code("planted bytecode ran"), str(source), "exec")))


def edit_loader(artifact: Path, module: str) -> None:
    """An edited ``loader/<module>.py``: a canary appended to the verified source."""
    with open(artifact / "loader" / f"{module}.py", "a") as f:
        f.write("\n" + canary_code("edited loader code ran"))
