"""The reference pages, written from the code at build time so they cannot drift: the command
line from ``packager.cli.parser.parser()``, the manifest from ``Manifest``'s dataclasses, the
exit codes from the ``PackagerError`` tree, the supported architectures from
``packager.chain.architectures.PROVEN`` (which the architecture matrix checks), the layout from
each module's docstring. An mkdocs hook (mkdocs.yml ``hooks:``): each page's own text stays, its
generated part is appended."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """mkdocs' hook: the generated part of a reference page, after the page's own text."""
    generate = PAGES.get(page.file.src_uri)
    return markdown if generate is None else markdown.rstrip() + "\n\n" + "\n".join(generate()) + "\n"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Iterator[str]:
    yield "| " + " | ".join(header) + " |"
    yield "|" + "---|" * len(header)
    yield from ("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    yield ""


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


# The command line ---------------------------------------------------------------------------------

def cli() -> Iterator[str]:
    from packager.cli.parser import parser

    top = parser()
    yield from _options(top)
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"## packager {name}\n\n{_cell(helps.get(name, ''))}\n"
                yield from ("```text", sub.format_usage().strip(), "```", "")
                yield from _options(sub)


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        value = "" if action.nargs == 0 or not action.option_strings else f"`{action.metavar or action.dest.upper()}`"
        rows.append((name, value, "yes" if action.required else "", action.help or ""))
    yield from _table(("argument", "value", "required", "meaning"), rows)


# The manifest -------------------------------------------------------------------------------------

def manifest() -> Iterator[str]:
    from packager.runtime.manifest import Manifest

    seen: list[type] = []
    _collect(Manifest, seen)
    for cls in seen:
        yield f"## {cls.__name__}\n"
        doc = _first_paragraph(cls.__doc__)
        if doc and not doc.startswith(f"{cls.__name__}("):  # not the signature dataclasses write
            yield doc + "\n"
        if issubclass(cls, Enum):
            yield from _table(("value",), [(f"`{m.value}`",) for m in cls])
        else:
            yield from _table(("field", "type", "default", "notes"), list(_fields(cls)))


def _collect(cls: type, seen: list[type]) -> None:
    """``cls`` and every dataclass and enum its fields name, depth first, each once."""
    if cls in seen:
        return
    seen.append(cls)
    if dataclasses.is_dataclass(cls):
        for tp in typing.get_type_hints(cls).values():
            for named in _named_types(tp):
                _collect(named, seen)


def _named_types(tp: Any) -> Iterator[type]:
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, Enum)):
        yield tp
    for arg in typing.get_args(tp):
        yield from _named_types(arg)


def _fields(cls: type) -> Iterator[tuple[str, ...]]:
    hints, notes = typing.get_type_hints(cls), _field_comments(cls)
    for f in dataclasses.fields(cls):
        yield f"`{f.name}`", _type_text(hints[f.name]), _default(f), notes.get(f.name, "")


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    if f.default is dataclasses.MISSING:
        return ""
    return f"`{f.default.value!r}`" if isinstance(f.default, Enum) else f"`{f.default!r}`"


def _type_text(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, Enum)):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    args = typing.get_args(tp)
    if not args:
        return getattr(tp, "__name__", str(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    inner = ", ".join("..." if a is Ellipsis else _type_text(a) for a in args)
    return f"{typing.get_origin(tp).__name__}[{inner}]"


_FIELD = re.compile(r"^\s+(\w+): [^#]*?(?:#\s*(.*))?$")


def _field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the one after it on its line, or those above it."""
    notes, above = {}, []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
        elif match := _FIELD.match(line):
            notes[match[1]] = " ".join([*above, match[2] or ""]).strip()
            above = []
        else:
            above = []
    return notes


# The exit codes -----------------------------------------------------------------------------------

def exit_codes() -> Iterator[str]:
    from packager.errors import PackagerError

    for module in _modules_defining_errors():  # every subclass, wherever it is defined, whatever imports it lazily
        importlib.import_module(module)

    rows = [(str(cls.exit_code), f"`{cls.__name__}`", f"`{base.__name__}`" if base else "",
             _first_paragraph(cls.__doc__) or _missing(cls))
            for cls, base in _tree(PackagerError, None)]
    yield from _table(("exit code", "exception", "subclass of", "meaning"), sorted(rows, key=lambda r: int(r[0])))


def _modules_defining_errors() -> list[str]:
    """The modules of packager/ that define a class deriving from an ``...Error`` (read with ast)."""
    found = []
    for path in sorted((REPO / "packager").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("Error") for b in node.bases):
                found.append(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
                break
    return found


def _tree(cls: type, base: type | None) -> Iterator[tuple[Any, type | None]]:
    yield cls, base
    sub: type
    for sub in sorted(cls.__subclasses__(), key=lambda c: c.__name__):
        yield from _tree(sub, cls)


def _missing(cls: type) -> str:
    raise ValueError(f"{cls.__module__}.{cls.__name__} has no docstring: the exit-code reference is made of them")


# The supported architectures ----------------------------------------------------------------------

def architectures() -> Iterator[str]:
    from packager.chain.architectures import PROVEN

    rows = [(f"`{name}`", proven.models, ", ".join(k.value for k in proven.chain_kinds), "yes / yes",
             f"`{proven.fused_attention}`" if proven.fused_attention else "no",
             "passes" if proven.int8 else "fails")
            for name, proven in PROVEN.items()]
    yield from _table(("architecture (`model_type`)", "models of this shape", "chain kinds", "ONNX / OpenVINO fp32",
                       "fused attention (onnxruntime)", "int8 on the default gate"), rows)


# The layout ---------------------------------------------------------------------------------------

def layout() -> Iterator[str]:
    package = REPO / "packager"
    for folder in sorted({p.parent for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}):
        yield f"## {folder.relative_to(REPO).as_posix()}/\n"
        rows = [(f"`{p.name}`", _module_doc(p)) for p in sorted(folder.iterdir())
                if p.is_file() and p.suffix != ".pyc"]
        yield from _table(("file", "its job"), rows)


def _module_doc(path: Path) -> str:
    if path.suffix != ".py":
        return "(data)"
    return _first_paragraph(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))) or "(no docstring)"


PAGES: dict[str, Callable[[], Iterator[str]]] = {
    "reference/cli.md": cli,
    "reference/manifest.md": manifest,
    "reference/exit-codes.md": exit_codes,
    "reference/layout.md": layout,
    "reference/architectures.md": architectures,
}
