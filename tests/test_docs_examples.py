"""Every ```bash and ```python block of README.md and docs/**/*.md runs, so an example that stops
working fails like any other test.

One test per page: its blocks run in page order in one working directory, which holds the tiny
fixtures under the names the docs use for a user's own folders (my-embedder/ ...), two real
images, and a local MLflow registry (``MLFLOW_TRACKING_URI``). A bash block runs with
``bash -e``, a python block in a fresh ``python`` process. Any other fence (text, toml, json...)
is shown, not run. ``<!-- docs-test: slow -->`` before a block (a build, a real model, a server)
leaves it out of the default run: the page runs again, whole, in the slow set; ``<!-- docs-test:
skip REASON -->`` never runs it (``docker build``...).

A ``packager build`` costs 15-70 s on a 2-core machine, so every build block is a slow one (a
test below fails an unmarked one, unless the page expects the build to be refused: ``|| echo``).
In the default run, ``dist/`` already holds each folder's ONNX fp32 artifact, the one the other
tests build from the same fixture (``tiny_artifacts``), where the page's build would have put it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md")
                                     if p.relative_to(REPO / "docs").parts[0] not in ("samples", "hooks"))]
RUN = {"bash", "python"}
# The fixtures, under the names the docs give a user's own saved models.
FOLDERS = {"my-embedder": "mean-normalize", "my-reranker": "ce-sigmoid", "my-sparse-encoder": "splade-max",
           "my-late-interaction": "mv-skiplist", "my-clip": "clip"}
IMAGES = {"cat.jpg": "grace_hopper.jpg", "dog.png": "logo2.png"}  # matplotlib's sample photograph and drawing
BLOCK_TIMEOUT = 600

_FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")
_BUILD = re.compile(r"^\s*packager\s+(-\S+\s+)*build\b", re.M)
# <!-- docs-test: slow -->, <!-- docs-test: skip REASON -->, <!-- docs-test: exit N --> (the block
# must end with that exit code: a refusal the page shows), or slow and exit together.
_MARKER = re.compile(r"<!--\s*docs-test:\s*(?:(slow|skip)\b,?\s*)?(?:exit (\d+))?\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    mark: str | None  # "slow", "skip" or None
    reason: str = ""
    exit_code: int = 0  # what the block must exit with

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the docs-test marker on the last non-blank line before it."""
    found, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, language = opening.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        mark, exit_code, reason = marker.groups() if (marker := _MARKER.search(before)) else (None, None, "")
        found.append(Block(page, i + 1, language.lower(), code + "\n", mark, reason, int(exit_code or 0)))
        i = end + 1
    return found


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.language in RUN]


def _params() -> list:
    params = []
    for page in PAGES:
        runnable = _runnable(page)
        name = page.relative_to(REPO).as_posix()
        if any(b.mark is None for b in runnable):
            params.append(pytest.param(page, False, id=name))
        # The whole page, from scratch: where it has slow blocks, or reads dist/ (which the default
        # run prefills, so only this run shows that the page itself builds what it reads).
        if any(b.mark == "slow" or (b.mark is None and "dist/" in b.code) for b in runnable):
            params.append(pytest.param(page, True, id=name + "[whole]", marks=pytest.mark.slow))
    return params


def _workdir(folder: Path, tiny_chains: dict[str, Path]) -> Path:
    """A user's folder: their saved models, two images, nothing else."""
    for name, fixture in FOLDERS.items():
        shutil.copytree(tiny_chains[fixture], folder / name, symlinks=True)
    samples = Path(matplotlib.get_data_path()) / "sample_data"
    for name, sample in IMAGES.items():
        _save_as(samples / sample, folder / name)
    return folder


def _prebuilt(folder: Path, tiny_artifacts: Mapping[str, Path]) -> None:
    """What the page's slow build blocks would have published: each folder's ONNX fp32 artifact."""
    for name, fixture in FOLDERS.items():
        shutil.copytree(tiny_artifacts[fixture], folder / "dist" / f"{name}-onnx-fp32")


def _save_as(source: Path, target: Path) -> None:
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB" if target.suffix == ".jpg" else "RGBA").save(target)


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # This checkout's package, whichever one the environment's editable install points at.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/mlflow.db"
    env["MPLBACKEND"] = "Agg"
    return env


def _run(block: Block, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shell = ["bash", "-e", "-o", "pipefail", "-c"]
    command = [*shell, block.code] if block.language == "bash" else [sys.executable, "-c", block.code]
    return subprocess.run(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=BLOCK_TIMEOUT, check=False)


@pytest.mark.parametrize(("page", "with_slow"), _params())
def test_page_examples_run(page: Path, with_slow: bool, tmp_path, tiny_chains, tiny_artifacts) -> None:
    workdir = _workdir(tmp_path, tiny_chains)
    if not with_slow:
        _prebuilt(workdir, tiny_artifacts)
    env = _environment(workdir)
    for block in _runnable(page):
        if block.mark == "skip" or (block.mark == "slow" and not with_slow):
            continue
        done = _run(block, workdir, env)
        assert done.returncode == block.exit_code, (
            f"{block.where()}: the ```{block.language} block exited {done.returncode}, not {block.exit_code}\n"
            f"{block.code}--- its output ---\n{done.stdout[-6000:]}")


def test_the_harness_finds_the_examples() -> None:
    """A change to the fence or marker syntax that finds nothing would pass every page: it fails here."""
    found = {page.relative_to(REPO).as_posix(): _runnable(page) for page in PAGES}
    for page in ("README.md", "docs/quickstart.md"):
        assert {b.language for b in found[page]} == RUN, f"{page}: expected bash and python blocks"
    assert sum(map(len, found.values())) >= 15, found
    skipped = [b for blocks_ in found.values() for b in blocks_ if b.mark == "skip"]
    assert all(b.reason for b in skipped), [b.where() for b in skipped if not b.reason]
    builds = [b.where() for blocks_ in found.values() for b in blocks_
              if b.mark is None and not b.exit_code and b.language == "bash" and _BUILD.search(b.code)]
    assert builds == [], f"mark these builds <!-- docs-test: slow --> (the default run has dist/ prebuilt): {builds}"
    # every runnable fence is closed: an unclosed one would swallow the rest of its page
    assert all(b.code.count("```") == 0 for blocks_ in found.values() for b in blocks_)


SAMPLE = """text
```bash
ls
```
<!-- docs-test: slow -->

```python
print()
```
<!-- docs-test: skip needs docker -->
  ```bash
  docker build .
  ```
```text
not run
```
<!-- docs-test: slow, exit 6 -->
```bash
false
```
"""


def test_the_markers_are_read(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(SAMPLE, encoding="utf-8")
    assert [(b.language, b.mark, b.reason, b.exit_code, b.line, b.code) for b in blocks(page)] == [
        ("bash", None, "", 0, 2, "ls\n"), ("python", "slow", "", 0, 7, "print()\n"),
        ("bash", "skip", "needs docker", 0, 11, "docker build .\n"), ("text", None, "", 0, 14, "not run\n"),
        ("bash", "slow", "", 6, 18, "false\n")]


def test_the_readme_links_resolve() -> None:
    """The README is not part of the site, whose build checks every link: its links into docs/ are checked here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the docs"
    assert [link for link in local if not (REPO / link).is_file()] == []


def test_the_tests_the_docs_name_exist() -> None:
    """A guarantee in the docs points at the test that proves it: a renamed or removed test would
    leave the promise standing on nothing."""
    missing = []
    for page in PAGES:
        for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", page.read_text(encoding="utf-8")):
            test = REPO / path
            if not test.is_file() or (name and not re.search(rf"^\s*(def|class) {name}\b", test.read_text(), re.M)):
                missing.append(f"{page.relative_to(REPO)}: {path}{'::' + name if name else ''}")
    assert missing == []
