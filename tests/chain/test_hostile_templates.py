"""Hostile chat templates in a model folder, wherever transformers or sentence-transformers would
read one: refused by ``build`` and ``inspect`` with exit 4 before the reference (whose stock
jinja2 folds constant expressions and recurses through nesting when it compiles) sees them, and
within bounded time and memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.cli import main

# Each class of what made the stock compiler blow up, in several variants.
HOSTILE = {
    # constant expressions jinja2 evaluates when it compiles: sized, and timed, before they run
    "repeated string": "{{ 'a' * 10**9 }}",
    "repeated list": "{% set x = [0] * 10**9 %}",
    "repeated inside a filter": "{{ ('ab' * 10**8) | length }}",
    "power": "{{ 2 ** (10 ** 9) }}",
    "power then division": "{{ (7 ** 1000000) // 3 }}",
    "percent width": "{{ '%0999999999d' % 1 }}",
    "center": "{{ 'x' | center(10**9) }}",
    "urlize of parentheses": "{{ (')' * 20000 ~ 'a)') | urlize }}",
    "urlize of a long word": "{{ ('(' * 30000 ~ 'www.a.com') | urlize }}",
    "wordwrap of a long word": "{{ ('a' * 200000) | wordwrap(1) }}",
    "trim by many characters": "{{ ('a' * 100000) | trim('b' * 100000 ~ 'a') }}",
    "folds that add up": "{% set a = 'x' * 600000 %}{% set b = 'y' * 600000 %}",
    # nesting beyond what jinja2's recursive parser and Python's compiler take
    "nested parentheses": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "nested lists": "{{ " + "[" * 3000 + "]" * 3000 + " }}",
    "chained not": "{{ " + "not " * 3000 + "x }}",
    "chained plus": "{{ " + " + ".join(["x"] * 3000) + " }}",
    "chained filters": "{{ x" + " | trim" * 3000 + " }}",
    "nested blocks": "{% if x %}" * 200 + "{% endif %}" * 200,
    "long integer literal": "{{ " + "9" * 5000 + " }}",
}
# The four, built in a child process under an address-space cap.
HEADLINE = ("repeated string", "power", "urlize of parentheses", "nested parentheses")


def _in_jinja_file(folder: Path, template: str) -> None:
    (folder / "chat_template.jinja").write_text(template)


def _in_tokenizer_config(folder: Path, template: str) -> None:
    (folder / "chat_template.jinja").unlink()
    _edit(folder / "tokenizer_config.json", chat_template=template)


def _in_named_templates(folder: Path, template: str) -> None:
    source = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    _edit(folder / "tokenizer_config.json", chat_template=[{"name": "default", "template": source},
                                                            {"name": "rag", "template": template}])


def _in_additional_templates(folder: Path, template: str) -> None:
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "rag.jinja").write_text(template)


def _in_processor_file(folder: Path, template: str) -> None:
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))


def _in_processing_kwargs(folder: Path, template: str) -> None:
    _edit(folder / "sentence_bert_config.json", processing_kwargs={"chat_template": {"chat_template": template}})


def _edit(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


PLACES = {f.__name__.removeprefix("_in_"): f for f in (_in_jinja_file, _in_tokenizer_config, _in_named_templates,
                                                       _in_additional_templates, _in_processor_file,
                                                       _in_processing_kwargs)}


@pytest.fixture
def never_the_reference(monkeypatch):
    """Nothing may reach sentence-transformers: a hostile template is refused before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the reference was loaded")

    monkeypatch.setattr("packager.chain.reference.open_model", refuse)


def _refused(chain: Path, command: str, tmp_path: Path, capsys) -> str:
    args = ["build", str(chain), "--out", str(tmp_path / "dist"), "--no-register", "-q"] if command == "build" \
        else ["inspect", str(chain)]
    assert main(args) == 4
    err = capsys.readouterr().err
    assert err.startswith("packager: error: ") and "Traceback" not in err
    assert not (tmp_path / "dist").exists()
    return err


@pytest.mark.parametrize("command", ["build", "inspect"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_template_is_refused_before_the_reference_compiles_it(name, command, tiny_chains, tmp_path, capsys,
                                                                        never_the_reference):
    chain = Path(shutil.copytree(tiny_chains["ce-chat"], tmp_path / "chain"))
    _in_jinja_file(chain, HOSTILE[name])
    assert "refused before sentence-transformers or transformers compile it" in _refused(chain, command, tmp_path,
                                                                                           capsys)


@pytest.mark.parametrize("command", ["build", "inspect"])
@pytest.mark.parametrize("place", sorted(PLACES))
def test_every_place_a_template_is_read_from_is_checked(place, command, tiny_chains, tmp_path, capsys,
                                                        never_the_reference):
    chain = Path(shutil.copytree(tiny_chains["ce-chat"], tmp_path / "chain"))
    PLACES[place](chain, HOSTILE["repeated string"])
    assert "more than" in _refused(chain, command, tmp_path, capsys)


def test_templates_that_add_up_to_more_than_a_folder_may_hold_are_refused(tiny_chains, tmp_path, capsys,
                                                                         never_the_reference):
    chain = Path(shutil.copytree(tiny_chains["ce-chat"], tmp_path / "chain"))
    _edit(chain / "tokenizer_config.json", chat_template=[{"name": f"t{i}", "template": "x" * 900_000}
                                                          for i in range(5)])  # each within the 1 MiB
    assert "chat templates hold more than" in _refused(chain, "inspect", tmp_path, capsys)
    # and many small ones, each compiled on its own: 100,000 empty templates would take minutes
    _edit(chain / "tokenizer_config.json", chat_template=[{"name": f"t{i}", "template": ""} for i in range(100_000)])
    assert "more than 16 chat templates" in _refused(chain, "inspect", tmp_path, capsys)


_BUILD_ALL = """
import json, resource, sys
import sentence_transformers  # what a build imports (torch, transformers), before the cap is measured
from packager.cli import main

with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), size + (2 << 30)))  # 2 GiB more than now
control, *chains = sys.argv[1:]
codes = {"control": main(["inspect", control])}  # the cap leaves room to load and compile the reference
codes |= {chain: main(["build", chain, "--out", chain + "-dist", "--no-register", "-q"]) for chain in chains}
print(json.dumps(codes))
"""


def test_hostile_templates_fail_the_build_in_bounded_memory_and_time(tiny_chains, tmp_path):
    """The build in a child process whose address space is capped 2 GiB above what its imports
    take (the stock compiler made 4.4 GB of the first), with a generous timeout as the hang
    detector (the third ran for minutes): every one exits 4 with a message, no traceback; the
    same chain with its own template is inspected, reference and all, under the same cap."""
    chains = []
    for i, name in enumerate(HEADLINE):
        chains.append(Path(shutil.copytree(tiny_chains["ce-chat"], tmp_path / f"chain{i}")))
        _in_jinja_file(chains[-1], HOSTILE[name])
    result = subprocess.run([sys.executable, "-c", _BUILD_ALL, str(tiny_chains["ce-chat"]), *map(str, chains)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    codes = json.loads(result.stdout.splitlines()[-1])
    assert codes == {"control": 0, **{str(c): 4 for c in chains}}, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.count("packager: error: ") == len(chains)
