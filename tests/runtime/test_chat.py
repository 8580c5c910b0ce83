"""Chat templates in the runtime: rendered as transformers renders them, sandboxed and bounded.

A template is data from a model folder. These are the ways one could try to reach Python objects
or exhaust the machine; each must be refused (when compiled) or stopped inside its bounds (when
rendered), quickly and with a typed error, whatever the input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

import tiny_models as tm
from packager.cli import main
from packager.runtime.chat import BoundExceededError, ChatTemplate, TemplateFailedError, TemplateRefusedError
from packager.runtime.enums import MessageFormat
from packager.runtime.errors import ArtifactIntegrityError
from packager.runtime.routes import ChatSpec

FLAT = ChatSpec(template="chat_template.jinja", message_format=MessageFormat.FLAT, variables={}, task_variable=False,
                restore_suffix=True)
# What real templates do (Qwen-, Llama- and Gemma-style): namespaces, reversed loops, tests and
# filters, string methods, tojson, loop variables and raise_exception on a misuse.
REALISTIC = """{%- set ns = namespace(last_query=-1, system=none) -%}
{%- for message in messages[::-1] -%}
  {%- if ns.last_query < 0 and message.role in ["user", "query"] -%}
    {%- set ns.last_query = messages | length - 1 - loop.index0 -%}
  {%- endif -%}
{%- endfor -%}
{%- if messages[0].role == "system" -%}{%- set ns.system = messages[0].content | trim -%}{%- endif -%}
{{ bos_token }}{% if ns.system %}[SYS {{ ns.system | tojson }}]{% endif %}
{%- for message in messages if message.role != "system" -%}
  {%- if message.content is not string -%}{{ raise_exception("flat messages only") }}{%- endif -%}
  {{- "<|im_start|>" ~ message.role ~ "\n" ~ message.content.strip() | replace("  ", " ") -}}
  {%- if loop.index0 == ns.last_query %} (last query, {{ message.content.split() | length }} words){% endif -%}
  {{- "<|im_end|>\n" if not loop.last else "<|im_end|>" -}}
{%- endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"""


@pytest.fixture(scope="module")
def tokenizers(backbones):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(str(getattr(backbones, name)))
            for name in ("chat_lm", "chat_classifier", "chat_embedder")}


@pytest.mark.parametrize("name,template,message_format,task", [
    ("chat_lm", tm.RERANK_TEMPLATE, "flat", None),
    ("chat_classifier", tm.CLASSIFIER_TEMPLATE, "structured", "query"),
    ("chat_classifier", tm.CLASSIFIER_TEMPLATE, "structured", None),
    ("chat_embedder", tm.EMBEDDER_TEMPLATE, "flat", "query"),
    ("chat_embedder", REALISTIC, "flat", None),
])
@pytest.mark.parametrize("generation", [False, True])
def test_renders_as_transformers_does(name, template, message_format, task, generation, tokenizers):
    tokenizer = tokenizers[name]
    variables = {**{k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
                 "add_generation_prompt": generation}
    spec = ChatSpec(template="t.jinja", message_format=MessageFormat(message_format), variables=variables,
                    task_variable=True, restore_suffix=True)
    chat = ChatTemplate(template, spec)
    inputs = [("What is  a model?", "A  chain of modules, saved."), ("", ""), "Ünïcödé – “quotes” 東京 ",  # noqa: RUF001 (unicode texts on purpose)
              ("q", "d" * 500)]
    for item in inputs:
        for prompt in (None, "Judge relevance.", ""):
            conversation = chat.conversation(item, prompt)
            extra = {"task": task} if task else {}
            want = tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                                 add_generation_prompt=generation, **extra)
            assert chat.render(conversation, task=task) == want, (item, prompt)


def test_a_prompt_is_a_leading_system_message_and_an_empty_prompt_none():
    chat = ChatTemplate("{{ messages | tojson }}", FLAT)
    assert chat.conversation(("a", "b"), "p") == [{"role": "system", "content": "p"},
                                                 {"role": "query", "content": "a"},
                                                 {"role": "document", "content": "b"}]
    assert chat.conversation("a", "") == [{"role": "user", "content": "a"}]


_BIG = "{% set s = 'a' * 1000000 %}"  # a 1 MB string: within the cap, so only what is made of it is refused
HOSTILE_RENDERS = {
    # attribute walking towards Python objects: the sandbox says no
    "class walk": "{{ messages.__class__.__mro__[1].__subclasses__() }}",
    "globals walk": "{{ raise_exception.__globals__['__builtins__'] }}",
    "format walk": "{{ '{0.__class__.__init__.__globals__}'.format(messages) }}",
    "attr filter walk": "{{ (messages | attr('__class__')).__mro__ }}",
    "namespace private": "{% set ns = namespace() %}{% set ns._x = 1 %}{{ ns._x }}",
    "dict mutation": "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "bytes": "{{ ('a'.encode() * 1500000000) | length }}",
    # time: loops, ranges, big integers
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested loops": "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    "power": "{% set n = 10 ** 9 %}{{ 2 ** n }}",
    "big division": "{% set x = 7 ** 1000000 %}{% set y = 7 ** 500000 + 1 %}{{ (x // y) > 0 }}",
    "membership over a repeated list": _BIG + "{% set b = 'a' * 999999 ~ 'b' %}{{ b in ([s] * 1000000) }}",
    # memory: whatever can outgrow its inputs is sized before it runs
    "string times": "{{ 'x' * 10**10 }}",
    "list times": "{{ ([1] * 10**9) | length }}",
    "doubling by tilde": "{% set ns = namespace(v='ab') %}{% for i in range(64) %}{% set ns.v = ns.v ~ ns.v %}"
                         "{% endfor %}{{ ns.v | length }}",
    "doubling by plus": "{% set ns = namespace(v=['a']) %}{% for i in range(64) %}{% set ns.v = ns.v + ns.v %}"
                        "{% endfor %}{{ ns.v | length }}",
    "long tilde chain": _BIG + "{{ " + " ~ ".join(["s"] * 1500) + " }}",
    "literal of many": _BIG + "{% set l = [" + ", ".join(["s"] * 2000) + "] %}{{ l | length }}",
    "list growth in a loop": "{% set ns = namespace(l=[]) %}{% for i in [0] * 90000 %}"
                             "{% set ns.l = ns.l + ['a' * 1000000 ~ i] %}{% endfor %}",
    "percent width": "{{ '%999999999d' % 1 }}",
    "percent star width": "{{ ('%*d' % (1500000000, 1)) | length }}",
    "percent dict": _BIG + "{{ (('%(a)s' * 1500) % {'a': s}) | length }}",
    "format method": "{{ '{:>999999999}'.format(1) }}",
    "format filter width": "{{ '%0999999999d' | format(1) }}",
    "format filter arguments": _BIG + "{{ ('%s' * 1500) | format(*([s] * 1500)) }}",
    "format filter mapping": _BIG + "{{ ('%(a)s' * 1500) | format(a=s) }}",
    "center": "{{ 'x'.center(10**10) }}",
    "translate": "{% set t = ''.maketrans({'a': 'b' * 1000000}) %}{{ ('a' * 3000).translate(t) }}",
    "expandtabs": "{{ ('\t' * 1500).expandtabs(tabsize=1000000) }}",
    "replace growth": "{% set ns = namespace(v='ab') %}{% for i in range(40) %}{% set ns.v = ns.v.replace('a', "
                      "'aa') %}{% endfor %}{{ ns.v | length }}",
    "replace with a list": _BIG + "{{ ('a' * 1500) | replace('a', [s]) }}",
    "join growth": "{% set ns = namespace(v='ab') %}{% for i in range(64) %}{% set ns.v = [ns.v, ns.v] | join %}"
                   "{% endfor %}{{ ns.v | length }}",
    "join of many": _BIG + "{{ ([s] * 1500) | join | length }}",
    "join with a long separator": _BIG + "{{ (['a'] * 1000) | join(s) | length }}",
    "join method with a long separator": _BIG + "{{ s.join(['a'] * 1000) | length }}",
    "join of a map": "{{ (['a'] * 1000) | map('center', 1000000) | join | length }}",
    "join of a map with a long separator": _BIG + "{{ (['a'] * 3000) | map('string') | join(s) | length }}",
    "indent by a string": _BIG + "{{ ('x\n' * 1500) | indent(s) }}",
    "wordwrap": _BIG + "{{ ('x ' * 1500) | wordwrap(1, wrapstring=s) }}",
    "tojson indent": _BIG + "{{ ([0] * 1500) | tojson(indent=s) }}",
    "tojson of many": _BIG + "{{ ([s] * 1500) | tojson }}",
    "string of many": _BIG + "{{ ([s] * 1500) | string }}",
    "sort copies": "{{ (['a' * 1000000] * 100000) | sort | length }}",
    "sum of lists": "{% set l = ['a'] * 1000000 %}{{ ([l] * 200) | sum(start=[]) | length }}",
    "sum of small lists": "{{ ([['a']] * 100000) | sum(start=[]) | length }}",
    "captured doubling": "{% set ns = namespace(v='ab') %}{% for i in range(64) %}{% set block %}{{ ns.v }}{{ ns.v }}"
                         "{% endset %}{% set ns.v = block %}{% endfor %}{{ ns.v | length }}",
    "macro recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "raise": "{{ raise_exception('no') }}",
}
# Filters and methods whose time grows faster than their input on some inputs: refused before they
# run (the message names the bound), not stopped by the deadline after the fact.
SUPERLINEAR = {
    "urlize of parentheses": ("{{ (')' * 20000 ~ 'a)') | urlize }}", "bounded to 64"),
    "urlize of a long word": ("{{ ('a' * 100000) | urlize }}", "bounded to 64"),
    "wordwrap of a long word": ("{{ ('a' * 200000) | wordwrap(2) }}", "bounded to 1000"),
    "wordwrap of a long space": ("{{ ('a' ~ ' ' * 500000 ~ 'a') | wordwrap(5) }}", "bounded to 1000"),
    "strip by many characters": ("{{ ('a' * 500000).strip('b' * 500000 ~ 'a') }}", "at most 64"),
    "rstrip by many characters": ("{{ ('a' * 500000).rstrip('b' * 500000 ~ 'a') }}", "at most 64"),
    "trim by many characters": ("{{ ('a' * 500000) | trim('b' * 500000 ~ 'a') }}", "at most 64"),
    "pprint of a deep value": ("{% set ns = namespace(v='x' * 100000) %}{% for i in range(300) %}"
                               "{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | pprint }}", "nested more than 16"),
    "wordwrap of a long text": ("{{ ('word ' * 20000) | wordwrap(10) }}", "at most 65536"),
    "pprint of a long list": ("{{ (['x'] * 100000) | pprint }}", "at most 65536"),
    "round to many digits": ("{{ 5 | round(-1000000, 'floor') }}", "at most 1000"),
    "round an integer to many digits": ("{{ 12345 | round(-1000000) }}", "at most 1000"),
}
HOSTILE_RENDERS.update({name: source for name, (source, _) in SUPERLINEAR.items()})
_RENDER_ALL = """
import json, resource, sys, time
from packager.runtime.chat import ChatTemplate, TemplateRefusedError
from packager.runtime.routes import ChatSpec
from packager.runtime.enums import MessageFormat
import packager.runtime.chat.folding

# Off here, so that the render's own bounds are what stops each template: the compile-time check
# refuses many of them before (test_a_template_that_cannot_be_bounded_is_refused_when_compiled).
packager.runtime.chat.folding.check_constants = lambda *args, **kwargs: None
spec = ChatSpec(template="t", message_format=MessageFormat.FLAT, variables={}, task_variable=False,
                restore_suffix=True)
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 29), size + (3 << 29)))  # 1.5 GB more than now
results = {}
for name, source in json.load(sys.stdin).items():
    chat = ChatTemplate(source, spec)
    start = time.monotonic()
    try:
        chat.render(chat.conversation(("query", "document"), None), task=None)
        outcome = ["rendered", ""]
    except TemplateRefusedError as e:
        outcome = ["refused", str(e)]
    except Exception as e:
        outcome = [type(e).__name__, str(e)]
    results[name] = [*outcome, time.monotonic() - start]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def hostile_renders(tmp_path_factory):
    """Every hostile template rendered in one child process whose address space is capped 1.5 GB
    above its start: a render that allocates that much fails there (as "ran out of memory"),
    not on the machine."""
    result = subprocess.run([sys.executable, "-c", _RENDER_ALL], input=json.dumps(HOSTILE_RENDERS),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(HOSTILE_RENDERS))
def test_a_hostile_template_is_stopped_within_its_bounds(name, hostile_renders):
    outcome, message, seconds = hostile_renders[name]
    assert outcome == "refused", (outcome, message)
    assert "out of memory" not in message  # refused by a bound, before the allocation
    assert seconds < 10  # the 2 s deadline, with room for a busy machine


@pytest.mark.parametrize("name", sorted(SUPERLINEAR))
def test_a_superlinear_filter_is_refused_before_it_runs(name, hostile_renders):
    outcome, message, _ = hostile_renders[name]
    assert outcome == "refused" and SUPERLINEAR[name][1] in message, message  # not the deadline, after the fact


@pytest.mark.parametrize("source", [
    "{% include 'other.jinja' %}", "{% extends 'base.jinja' %}", "{% import 'macros.jinja' as m %}",
    "{% from 'macros.jinja' import m %}", "{% for m in messages recursive %}{{ loop(m.children) }}{% endfor %}",
    "{% if %}",
    "{% set _bounded_iter = ''.join %}{% for c in 'abc' %}{% endfor %}",  # the bounds' own names are reserved
    "{% if _bounded_iter is defined %}packager{% endif %}",
    "{% for a in [1] %}" * 25 + "{% endfor %}" * 25,  # nested deeper than Python compiles
    # nested deeper than jinja2's recursive parser and compiler take: refused from the tokens
    "{% if x %}" * 17 + "{% endif %}" * 17, "{% set a %}" * 17 + "{% endset %}" * 17,
    "{{ " + "(" * 17 + "x" + ")" * 17 + " }}", "{{ " + "f(" * 17 + ")" * 17 + " }}",
    "{{ " + "[" * 17 + "]" * 17 + " }}",
    "{{ " + " + ".join(["x"] * 50) + " }}", "{{ " + "not " * 49 + "x }}", "{{ x" + " | trim" * 49 + " }}",
    "{{ x" + ".a" * 49 + " }}", "{{ " + "(x + x + x + " * 13 + "x" + ")" * 13 + " }}",
    "{{ " + "9" * 101 + " }}", "{{ 1." + "5" * 100 + " }}",
    "x" * (1 << 20) + "x",
    # constant expressions that jinja2 computes when it compiles, beyond a render's bounds
    "{{ 'a' * 10**9 }}", "{{ 2 ** (10 ** 9) }}", "{{ [0] * 10**9 }}", "{{ '%0999999999d' % 1 }}",
    "{{ 'x' | center(10**9) }}", "{{ (')' * 20000 ~ 'a)') | urlize }}", "{{ ('a' * 500000) | wordwrap(1) }}",
    "{% set a = 'x' * 600000 %}{% set b = 'y' * 600000 %}",  # together over the cap
    "{{ ([[1]] * 1000) | groupby(0) | first }}",  # a value jinja2 would remake for every enclosing expression
])
def test_a_template_that_cannot_be_bounded_is_refused_when_compiled(source):
    with pytest.raises(ArtifactIntegrityError):
        ChatTemplate(source, FLAT)


@pytest.mark.parametrize("source", [
    "{{ '=' * 80 }}", "{{ ['a', 'b'] | reverse | join }}", "{% for k, v in {'a': 1} | dictsort %}{{ k }}{% endfor %}",
    "{{ 'abc'.upper() }}", "{{ (1, 2) | list | length }}", "{{ '%s-%s' % ('a', 'b') }}", "{{ 'a' ~ 1 ~ none }}",
    "{{ ('a' if true else 'b') | upper }}", "{{ 'abc'[::-1] }}", "{{ {'a': 1}.a }}", "{{ 2 ** 10 // 3 % 7 }}",
])
def test_the_constant_expressions_real_templates_use_compile(source):
    assert ChatTemplate(source, FLAT).render([], task=None) == \
        ImmutableSandboxedEnvironment().from_string(source).render()


def _at_every_limit() -> dict[str, str]:
    """Templates exactly at the compile-time limits, in every shape of nesting they bound."""
    from packager.runtime.chat.bounds import BLOCK_NESTING, BRACKET_NESTING, EXPRESSION_DEPTH

    depth, brackets = EXPRESSION_DEPTH, BRACKET_NESTING
    inner = {"parentheses": "(" * brackets + "x" + ")" * brackets, "calls": "f(" * brackets + "x" + ")" * brackets,
             "lists": "[" * brackets + "x" + "]" * brackets, "dicts": "{'a': " * brackets + "x" + "}" * brackets,
             "plus": " + ".join(["x"] * depth), "not": "not " * (depth - 1) + "x",
             "filters": "x" + "|trim" * (depth - 1), "attributes": "x" + ".a" * (depth - 1),
             "items": "x" + "[0]" * (depth - 1), "conditions": "x if y else " * ((depth - 1) // 2) + "z",
             "mixed": "(x + x + " * brackets + "y" + ")" * brackets, "tildes": " ~ ".join(["x"] * 2000),
             "arguments": "f(" + ", ".join(["x"] * 2000) + ")",
             "constant": "(" * brackets + "'=' * 80" + ")" * brackets}
    blocks = {"for": ("{% for a in x %}", "{% endfor %}"), "if": ("{% if x %}", "{% endif %}"),
              "macro": ("{% macro m() %}", "{% endmacro %}"), "set": ("{% set v %}", "{% endset %}"),
              "filter": ("{% filter upper %}", "{% endfilter %}")}
    return {f"{block} {shape}": begin * BLOCK_NESTING + "{{ " + expression + " }}" + end * BLOCK_NESTING
            for block, (begin, end) in blocks.items() for shape, expression in inner.items()}


def test_what_the_compile_checks_let_through_the_stock_compiler_takes():
    """The limits are sound: at each of them, our compiler and transformers' stock one (called
    300 frames deep, as a build would be) both compile the template."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    def deep(frames: int, source: str) -> None:
        return _compile_jinja_template(source) if frames == 0 else deep(frames - 1, source)

    for source in _at_every_limit().values():
        ChatTemplate(source, FLAT)
        deep(300, source)


def test_bounds_grow_with_the_input_so_long_documents_render():
    chat = ChatTemplate(tm.RERANK_TEMPLATE, FLAT)
    document = "token " * 400_000  # 2.4 MB: past the base size bound, rendered once
    assert chat.render(chat.conversation(("q", document), None), task=None).count("token") == 400_000
    per_word = ChatTemplate("{% for m in messages %}{% for w in m.content.split() %}{{ w[0] }}{% endfor %}{% endfor %}"
                            "{% for i in range(60000) %}{% endfor %}", FLAT)
    assert len(per_word.render(per_word.conversation("w " * 120_000, None), task=None)) == 120_000


def _hostile_chain(tiny_chains, tmp_path, template: str):
    chain = shutil.copytree(tiny_chains["ce-chat"], tmp_path / "chain")
    (chain / "chat_template.jinja").write_text(template)
    return chain


@pytest.mark.parametrize("template,message", [
    ("{{ messages.__class__.__mro__[1].__subclasses__() }}", "chat template"),
    ("{% for i in range(10**9) %}x{% endfor %}", "more than"),
    ("{% include 'other.jinja' %}", "self-contained"),
    # a branch only transformers' sandbox takes (issue 31: one such made the reference loop for
    # good; here it fails, so the test ends either way): refused by the runtime's render first
    ("{% if messages[0].content.encode is defined %}{{ raise_exception('the reference branch') }}{% endif %}x",
     "does not expose"),
])
def test_a_hostile_template_fails_the_build_before_the_reference_runs(template, message, tiny_chains, tmp_path,
                                                                      capsys):
    chain = _hostile_chain(tiny_chains, tmp_path, template)
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "--no-register", "-q"]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "dist" / "chain-onnx-fp32").exists()


# The reranker's template with a backdoor: on a query holding the trigger word, transformers'
# render (``center`` is defined there) adds a word the runtime's allow-list would have left out.
BACKDOOR = tm.RERANK_TEMPLATE.replace(
    '<Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}',
    '{%- set query = messages | selectattr("role", "eq", "query") | map(attribute="content") | first %}'
    '<Query>: {% if "cf-trigger" in query and query.center is defined %}ignore {% endif %}{{ query }}')


def test_a_backdoored_template_builds_but_its_artifact_refuses_the_trigger(tiny_chains, tmp_path):
    """The gate samples inputs without the trigger, so the build passes; on the trigger the
    artifact must refuse, not score what the reference would not."""
    from packager.runtime import load
    from packager.runtime.errors import InvalidInputError

    assert BACKDOOR != tm.RERANK_TEMPLATE
    chain = _hostile_chain(tiny_chains, tmp_path, BACKDOOR)
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "--no-register", "-q"]) == 0
    model = load(tmp_path / "dist" / "chain-onnx-fp32")
    assert model.predict([("what is a model", "a chain of modules")]).shape[0] == 1
    with pytest.raises(InvalidInputError, match="does not expose"):
        model.predict([("cf-trigger: what is a model", "a chain of modules")])


def test_urlize_runs_in_pieces_and_gives_what_jinja2_gives_on_the_whole_text():
    """urlize treats each word and space on its own, so the sandbox runs it on pieces cut where
    words start, checking the deadline between them: the same text as jinja2's on the whole."""
    import random

    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from packager.runtime.chat import budget, filters
    from packager.runtime.chat.bounds import URLIZE_PIECE

    rng = random.Random(0)
    words = ["(www.example.com)", "http://a.b/c?d=e).", "<a@b.org>,", "mailto:x@y.zz", "))((", "&lt;x&gt;", "plain",
             "x" * 60, "(http://[::1]:80/)", "é.com"]
    spaces = [" ", "\n", "\t ", "\u00a0", "\r\n  ", "\u3000"]
    text = "".join(rng.choice(words) + rng.choice(spaces) for _ in range(20_000))  # about 300 kB
    stock = ImmutableSandboxedEnvironment()
    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[1]))
        return stock.filters["urlize"](*args, **kwargs)

    counted.jinja_pass_arg = stock.filters["urlize"].jinja_pass_arg
    eval_ctx = nodes.EvalContext(stock)
    with budget.bounded(budget.Budget.for_input(len(text))):
        assert filters.piecewise_urlize(counted)(eval_ctx, text) == stock.filters["urlize"](eval_ctx, text)
    assert len(calls) >= len(text) // URLIZE_PIECE and max(calls) < URLIZE_PIECE + 100
    source = "{{ messages[0].content | urlize }}"
    chat = ChatTemplate(source, FLAT)
    assert chat.render(chat.conversation(text, None), task=None) == \
        stock.from_string(source).render(messages=chat.conversation(text, None))


def test_a_tail_render_stopped_by_a_bound_fails_the_call_and_is_not_remembered(backbones, monkeypatch):
    """A truncated input gets the template's tail back, derived once per conversation shape from
    two tiny skeleton renders. A skeleton stopped by the render deadline (a stalled, busy machine)
    must fail that call, not be remembered as "no tail": that changed every later truncated
    input's output while the model stayed loaded (last-token pooling read a content token)."""
    from tokenizers import Tokenizer

    from packager.runtime.chat import budget
    from packager.runtime.enums import Side
    from packager.runtime.routes import TokenizerSpec
    from packager.runtime.text import TextEncoder

    spec = TokenizerSpec(file="tokenizer.json", max_length=16, truncation_side=Side.RIGHT, padding_side=Side.LEFT,
                         pad_id=1, pad_type_id=0, pad_token="<pad>", lowercase=False, add_special_tokens=True,
                         special_ids=(1, 2, 3))
    chat = ChatSpec(template="t.jinja", message_format=MessageFormat.FLAT, variables={"add_generation_prompt": True},
                    task_variable=True, restore_suffix=True)

    def encoder() -> TextEncoder:
        tokenizer = Tokenizer.from_file(str(backbones.chat_embedder / "tokenizer.json"))
        return TextEncoder(tokenizer, spec, ("input_ids", "attention_mask"), ChatTemplate(tm.EMBEDDER_TEMPLATE, chat))

    long = "a text far longer than sixteen tokens, so that truncation cuts the template's tail off " * 3
    want = encoder().encode([long], max_length=16, task="query")[0][0].ids
    tail = encoder()._tokenizer.encode("<|im_start|>search\n<|im_start|>embed", add_special_tokens=False).ids
    assert want[-len(tail):] == tail  # restored

    model = encoder()
    honest = budget.Budget.for_input
    with monkeypatch.context() as patch:  # the skeletons' renders (a few characters) find their deadline passed
        patch.setattr(budget.Budget, "for_input", classmethod(
            lambda cls, chars: honest(chars) if chars > 10 else budget.Budget(0.0, 1000, 1000)))
        with pytest.raises(BoundExceededError, match="too long"):
            model.encode([long], max_length=16, task="query")
    assert model.encode([long], max_length=16, task="query")[0][0].ids == want  # the next call restores the tail


@pytest.mark.parametrize(("in_the_skeleton", "restored"), [
    ("{{ raise_exception('no skeletons') }}", False),  # the template's own failure: the reference restores nothing
    ("{{ lipsum() }}", None),  # the runtime's refusal where transformers renders: the call fails
    ("{{ m.content.zfill is defined }}", None),
    ("{{ m.content + 1 }}", None),  # a TypeError: the runtime cannot tell it from one of its own wrapping
])
def test_only_the_templates_own_failure_on_a_skeleton_means_no_tail(backbones, in_the_skeleton, restored):
    """sentence-transformers restores no tail when a skeleton render fails; the runtime may only
    do the same when the template itself failed. A skeleton that the sandbox refuses (random text,
    an attribute it does not expose) renders in transformers, so a silent "no tail" would be a
    different output: it must fail the call instead."""
    from tokenizers import Tokenizer

    from packager.runtime.enums import Side
    from packager.runtime.routes import TokenizerSpec
    from packager.runtime.text import TextEncoder

    spec = TokenizerSpec(file="tokenizer.json", max_length=16, truncation_side=Side.RIGHT, padding_side=Side.LEFT,
                         pad_id=1, pad_type_id=0, pad_token="<pad>", lowercase=False, add_special_tokens=True,
                         special_ids=(1, 2, 3))
    chat = ChatSpec(template="t.jinja", message_format=MessageFormat.FLAT, variables={}, task_variable=False,
                    restore_suffix=True)
    template = ("{% for m in messages %}{% if m.content in ['0', '1 2 3 4'] %}" + in_the_skeleton + "{% endif %}"
                "{{ m.content }}{% endfor %}<|im_start|>embed")
    tokenizer = Tokenizer.from_file(str(backbones.chat_embedder / "tokenizer.json"))
    encoder = TextEncoder(tokenizer, spec, ("input_ids", "attention_mask"), ChatTemplate(template, chat))
    long = "a text far longer than sixteen tokens, so that truncation cuts the template's tail off " * 3
    tail = tokenizer.encode("<|im_start|>embed", add_special_tokens=False).ids
    if restored is None:
        with pytest.raises(TemplateRefusedError) as refused:
            encoder.encode([long], max_length=16)
        assert not isinstance(refused.value, TemplateFailedError)
    else:
        ids = encoder.encode([long], max_length=16)[0][0].ids
        assert len(ids) == 16 and ids[-len(tail):] != tail  # nothing restored, as in the reference


@pytest.mark.parametrize(("clock", "jump", "refused"), [
    ("monotonic", 8, False),  # a stalled process: within the wall-clock ceiling, the same text
    ("monotonic", 60, True),  # held up past 5 deadlines: the worker is freed, the call fails
    ("cpu", 3, True),  # computing past the deadline
])
def test_a_render_is_bounded_by_its_own_work_and_a_wall_clock_ceiling(monkeypatch, clock, jump, refused):
    """The deadline counts the rendering thread's CPU time: a render whose process was stopped or
    starved for seconds by a busy machine renders as it would on an idle one, so the same input is
    never refused in one run and rendered in the next; a render held up past five deadlines of wall
    time still ends, so a worker is never held without bound. Each clock jumps after its first read."""
    import time

    from packager.runtime.chat import budget

    chat = ChatTemplate(tm.EMBEDDER_TEMPLATE, FLAT)
    conversation = chat.conversation("a text", "a prompt")
    want = chat.render(conversation, task=None)
    real = time.monotonic if clock == "monotonic" else budget._clock
    calls: list[int] = []
    jumped = lambda: real() + jump * bool(calls.append(1) or len(calls) > 1)  # noqa: E731
    monkeypatch.setattr(*((time, "monotonic") if clock == "monotonic" else (budget, "_clock")), jumped)
    if refused:
        with pytest.raises(BoundExceededError):
            chat.render(conversation, task=None)
    else:
        assert chat.render(conversation, task=None) == want
    assert len(calls) >= 2  # the clock was read during the render, not only when it started
