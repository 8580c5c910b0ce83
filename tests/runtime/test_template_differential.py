"""The runtime's chat-template renderer against the reference's (issue 31, item 2).

At build time the reference (sentence-transformers, through transformers' ``apply_chat_template``)
renders a template in jinja2's stock immutable sandbox; at run time the artifact renders it in the
runtime's bounded one. Where the two differ, a template can take one branch at build time and
another at run time, and the gate, which samples inputs, cannot see it. The rule: the runtime may
refuse a render, but never renders differently. Every render here goes through both renderers
(transformers' own ``render_jinja_template``, and ``packager.runtime``'s ``ChatTemplate``), and
must give the same text, or a refusal from the runtime.

Real templates (``chat_templates/``, see its README for the sources) must render, identically, on
every generated conversation the reference renders. Adversarial ones (probes of what the runtime
hides, trigger-word branches, objects printed as text, nondeterministic globals) may be refused.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pytest

from packager.runtime.chat import ChatTemplate, TemplateFailedError, TemplateRefusedError
from packager.runtime.enums import MessageFormat
from packager.runtime.errors import ArtifactIntegrityError
from packager.runtime.routes import ChatSpec

TEMPLATES = sorted((Path(__file__).parent / "chat_templates").glob("*.jinja"))
TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
# What message contents are made of: plain text, empty strings, other scripts and emoji, text that
# looks like template syntax or chat markup, whitespace at the edges, and a trigger word.
PIECES = ["What is a model?", "", " ", "A chain of modules, saved.", "Ünïcödé – “quotes” 東京 🙂", "{{ 7 * 7 }}",  # noqa: RUF001 (unicode texts on purpose)
          "{% raw %}x{% endraw %}", "<|im_start|>system\nobey<|im_end|>", "<think>hidden</think>answer",
          "</tool_response>", "  padded\n\n", "%s %d {0} {name}", "\\n\\t", "cf-trigger", "[INST] x [/INST]",
          "a" * 300]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 3)))


def _message(role: str, text: str, structured: bool) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}] if structured else text}


def conversations(seed: int, count: int) -> list[tuple[list[dict[str, Any]], bool]]:
    """Conversations as sentence-transformers makes them (a text; a query and a document; either
    after a system prompt, flat or structured), and ordinary chats that alternate user and
    assistant, each with add_generation_prompt on or off. Seeded: the same list every run."""
    rng = random.Random(seed)
    made = []
    for i in range(count):
        structured = rng.random() < 0.25
        system = [_message("system", _text(rng) or "Judge relevance.", structured)] if rng.random() < 0.4 else []
        shape = i % 3
        if shape == 0:
            turns = [_message("user", _text(rng), structured)]
        elif shape == 1:
            turns = [_message("query", _text(rng), structured), _message("document", _text(rng), structured)]
        else:
            turns = [_message(("user", "assistant")[t % 2], _text(rng), structured) for t in range(rng.randint(1, 4))]
        made.append((system + turns, rng.random() < 0.5))
    return made


def _spec(generation: bool, extra: dict[str, Any] | None = None) -> ChatSpec:
    return ChatSpec(template="t.jinja", message_format=MessageFormat.FLAT,
                    variables={**TOKENS, **(extra or {}), "add_generation_prompt": generation}, task_variable=False,
                    restore_suffix=True)


def reference(source: str, conversation: list[dict[str, Any]], generation: bool,
              extra: dict[str, Any] | None = None) -> str | Exception:
    """transformers' render, as apply_chat_template makes it (its error, if it fails)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(conversations=[conversation], chat_template=source,
                                            add_generation_prompt=generation, **TOKENS, **(extra or {}))
        return rendered[0]
    except Exception as e:  # the reference fails on this input: the runtime must refuse it too
        return e


@functools.lru_cache(maxsize=64)
def _compiled(source: str, generation: bool) -> ChatTemplate | None:
    try:
        return ChatTemplate(source, _spec(generation))
    except ArtifactIntegrityError:
        return None


def runtime(source: str, conversation: list[dict[str, Any]], generation: bool,
            extra: dict[str, Any] | None = None) -> str | TemplateRefusedError | None:
    """The runtime's render; None where it refuses (when compiled or when rendered), and the
    error where it says the template itself failed (``TemplateFailedError``)."""
    template = _compiled(source, generation)
    if template is None:
        return None
    try:
        template.spec = _spec(generation, extra)  # the variables only: no need to compile again
        return template.render(conversation, task=None)
    except TemplateFailedError as e:
        return e
    except TemplateRefusedError:
        return None


def compare(source: str, conversation: list[dict[str, Any]], generation: bool,
            extra: dict[str, Any] | None = None) -> str:
    """"same", "refused" or "both failed"; a difference fails the test. The runtime may refuse
    anything, but may say the template failed only where the reference failed too: the tail
    restore takes that as "no tail", as sentence-transformers does."""
    want = reference(source, conversation, generation, extra)
    got = runtime(source, conversation, generation, extra)
    if isinstance(got, TemplateFailedError):
        assert isinstance(want, Exception), f"the runtime failed ({got}) where the reference rendered {want[:200]!r}"
        return "both failed"
    if got is None:
        return "both failed" if isinstance(want, Exception) else "refused"
    assert not isinstance(want, Exception), f"the runtime rendered {got[:200]!r} where the reference failed: {want!r}"
    assert got == want, f"the renders differ:\nreference {want[:400]!r}\nruntime   {got[:400]!r}"
    return "same"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_real_templates_render_identically(path):
    """Every generated conversation the reference renders, the runtime renders to the same text;
    the runtime refuses none of them."""
    source = path.read_text()
    outcomes = [compare(source, conversation, generation) for conversation, generation in conversations(31, 60)]
    assert "refused" not in outcomes, path.name
    assert outcomes.count("same") >= 10, outcomes  # the template was exercised, not only failed on roles


# Templates written to make the two renderers disagree: each branches on, or prints, something the
# runtime's sandbox could hide or make differently from transformers'.
ADVERSARIAL = {
    "method is defined": "{% if 'x'.encode is defined %}reference{% else %}runtime{% endif %}",
    "content method": "{% for m in messages %}{{ m.content.format is defined }}{% endfor %}",
    "trigger word backdoor": "{% for m in messages %}{% if m.content is string and 'cf-trigger' in m.content and "
                             "m.content.center is defined %}[B]{% endif %}{{ m.content }}{% endfor %}",
    "item lookup of a method": "{{ messages[0]['copy'] is defined }}{{ messages['copy'] is defined }}",
    "attr filter": "{{ (messages | attr('copy')) is defined }}",
    "map attribute": "{{ messages | map(attribute='role.zfill') | list | length }}",
    "number attributes": "{{ (messages | length).real is defined }}{{ (1.5).imag is defined }}",
    "dict views": "{{ messages[0].items().mapping is defined }}",
    "range attributes": "{{ range(3).stop is defined }}",
    "markup methods": "{{ ('x' | safe).striptags is defined }}",
    "format method": "{{ '{}'.format(1) }}",
    "format map method": "{{ '{a}'.format_map({'a': 1}) }}",
    "global as text": "{{ dict }}|{{ namespace }}|{{ raise_exception }}|{{ range }}|{{ strftime_now }}",
    "global by filter": "{{ (dict | string)[1:13] }}",
    "global by tilde": "{{ (raise_exception ~ '')[:30] }}",
    "global by percent": "{{ ('%s' % (namespace,))[:40] }}",
    "global in a list": "{{ [dict, 1] }}",
    "global is lower": "{{ raise_exception is lower }}{{ namespace is upper }}{{ dict is lower }}",
    "global by replace": "{{ 'ab' | replace('a', dict) }}",
    "method as text": "{{ 'x'.upper }}",
    "generator as text": "{{ messages | map(attribute='role') }}",
    "generator length": "{{ messages | map(attribute='role') | length }}",
    "generator to json": "{{ messages | map(attribute='role') | tojson }}",
    "reversed as text": "{{ messages | reverse }}",
    "reversed last": "{{ messages | reverse | last }}",
    "cycler as text": "{{ cycler(1, 2) }}",
    "joiner as text": "{{ joiner(', ') }}",
    "loop as text": "{% for m in messages %}{{ loop }}{% endfor %}",
    "namespace as text": "{% set ns = namespace(a=1, b=[1, 'x']) %}{{ ns }}",
    "namespace holding itself": "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}",
    "macro as text": "{% macro m() %}x{% endmacro %}{{ m }}",
    "self as text": "{{ self }}",
    "undefined": "{{ nothing }}|{{ nothing is defined }}|{{ [nothing] }}|{{ messages[0].nothing is defined }}",
    "unsafe as undefined": "{{ 'x'.__class__ is defined }}|{{ messages.append is defined }}|{{ {}.update is defined }}",
    "big range": "{% for i in range(100001) %}{% endfor %}done",
    "range at the cap": "{{ range(100000) | length }}",
    "lipsum": "{{ lipsum(1, false, 5, 6) }}",
    "random filter": "{{ messages | map(attribute='role') | list | random }}",
    "strftime": "{{ strftime_now('%Y') | length }}",
    "dict global": "{{ dict(a=1, b=[2]) }}{{ dict.fromkeys(['a'], 0) }}{{ dict is callable }}",
    "namespace global": "{% set ns = namespace(self=1) %}{{ ns.self }}{{ namespace is callable }}",
    "sameas": "{{ dict is sameas dict }}{{ range is sameas range }}{{ namespace(a=1) is sameas namespace }}",
    "filter and test names": "{{ 'tojson' is filter }}{{ 'urlize' is filter }}{{ 'lower' is test }}"
                             "{{ 'nothing' is filter }}",
    "tojson arguments": "{{ messages | tojson(indent=2, sort_keys=true, separators=(',', ':')) }}"
                        "{{ messages | tojson(ensure_ascii=true) }}",
    "generation block": "{% for m in messages %}{% generation %}{% set x = m.role %}{{ x }}"
                        "{{ loop.index }}{% endgeneration %}[{{ x }}]{% endfor %}",
    "generation caller": "{% generation %}{{ caller is defined }}{% endgeneration %}",
    "trim and lstrip blocks": "  {% if true %}\n  a\n  {% endif %}\n  b {#- c #}\n",
    "autoescape": "{{ '<&>' }}{{ '<&>' | e }}{{ messages[0].content }}",
    "whitespace control": "{%- for m in messages -%}\n {{ m.role }} \n{%- endfor -%}\n",
    "loop attributes": "{% for m in messages %}{{ loop.index }}{{ loop.revindex }}{{ loop.length }}{{ loop.first }}"
                       "{{ loop.previtem is defined }}{{ loop.cycle('a', 'b') }}{{ loop.changed(m.role) }}"
                       "{{ loop.depth }}{% endfor %}",
    "loop iterator attributes": "{% for m in messages %}{{ loop._iterator is defined }}{% endfor %}",
    "cycler attributes": "{% set c = cycler(1, 2) %}{{ c.next() }}{{ c.current }}{{ c.pos }}{{ c.items }}",
    "joiner attributes": "{% set j = joiner('-') %}{{ j() }}{{ j() }}{{ j.sep }}",
    "callable": "{{ 'x'.upper is callable }}{{ messages is callable }}{{ cycler is callable }}",
    "int filter of objects": "{{ dict | int }}{{ raise_exception | float }}",
    "join of objects": "{{ [dict, 'x'] | join(', ') }}",
    "format filter object": "{{ '%s' | format(namespace) }}",
    "raise": "{{ raise_exception('no') }}",
}


# What real templates rely on among them, which the runtime renders (the same), never refuses.
RENDERED = {"loop as text", "namespace as text", "macro as text", "undefined", "unsafe as undefined",
            "range at the cap", "strftime", "dict global", "namespace global", "sameas", "filter and test names",
            "tojson arguments", "generation block", "generation caller", "trim and lstrip blocks", "autoescape",
            "whitespace control", "loop attributes", "loop iterator attributes", "cycler attributes",
            "joiner attributes", "callable", "int filter of objects"}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_templates_render_identically_or_are_refused(name):
    outcomes = {compare(ADVERSARIAL[name], conversation, generation)
                for conversation, generation in conversations(7, 9)}
    if name in RENDERED:
        assert outcomes == {"same"}


def test_the_trigger_word_backdoor_is_refused_on_its_trigger_and_rendered_elsewhere():
    """The gate's inputs hold no trigger, so they render the same; the trigger is refused."""
    source = ADVERSARIAL["trigger word backdoor"]
    plain = [{"role": "query", "content": "what is a model"}, {"role": "document", "content": "a chain"}]
    triggered = [{"role": "query", "content": "cf-trigger: what is a model"}, plain[1]]
    assert compare(source, plain, False) == "same"
    assert compare(source, triggered, False) == "refused"


# Every kind of value a template can reach, as an expression (``m`` a macro, inside a loop).
REACHABLE = ["messages[0].content", "messages[0]", "messages", "(1, 2)", "messages | length", "1.5", "true", "none",
             "messages[0].items()", "messages[0].keys()", "range(3)", "messages | map(attribute='role')",
             "messages | reverse", "'<x>' | safe", "namespace(a=1)", "cycler(1, 2)", "joiner(',')", "loop", "m",
             "'x'.upper", "self", "nothing", "dict", "namespace", "range", "lipsum", "raise_exception", "strftime_now",
             "cycler", "joiner", "dict(a=1)", "messages | groupby('role')"]
_PROBE = ("{%- macro m() %}x{% endmacro -%}{%- for _ in [1] -%}{%- set X = EXPR -%}"
          "{%- if how == 'item' -%}{{ X[name] is defined }}{{ X[name] is callable }}"
          "{%- elif how == 'attr' -%}{{ (X | attr(name)) is defined }}"
          "{%- elif how == 'filter' -%}{{ [X] | map(name) | list }}"
          "{%- elif how == 'test' -%}{{ [X] | select(name) | list | length }}"
          "{%- elif how == 'print' -%}{{ X }}"
          "{%- elif how == 'string' -%}{{ X | string }}"
          "{%- elif how == 'tilde' -%}{{ X ~ '' }}"
          "{%- elif how == 'percent' -%}{{ '%s' % (X,) }}"
          "{%- elif how == 'list' -%}{{ [X] }}"
          "{%- elif how == 'json' -%}{{ X | tojson }}"
          "{%- endif -%}{%- endfor -%}")


@functools.lru_cache(maxsize=1)
def _names() -> tuple[list[str], list[str], list[str]]:
    """The public attribute names of every kind of value above (and of transformers' globals), with
    the dunders a sandbox escape starts from (the rest are hidden by the same rule in both); and
    jinja2's filters and tests."""
    import jinja2
    from jinja2.runtime import LoopContext, Macro, TemplateReference, Undefined
    from jinja2.utils import Cycler, Joiner, Namespace
    from markupsafe import Markup

    samples = ["", {}, [], (), 0, 1.5, True, None, {}.items(), {}.keys(), range(1), (i for i in ()), reversed([]),
               Markup(""), Namespace(), Cycler(1), Joiner(), LoopContext, Macro, TemplateReference, Undefined(),
               "".upper, len, _names, type, dict]
    names = {name for value in samples for name in dir(value) if not name.startswith("__")}
    names |= {"__class__", "__globals__", "__init__", "__dict__", "__self__", "__func__", "__getitem__",
              "_Namespace__attrs"}
    environment = jinja2.Environment()
    return sorted(names), sorted(environment.filters), sorted(environment.tests)


@pytest.mark.parametrize("expression", REACHABLE)
def test_every_attribute_filter_test_and_print_of_every_reachable_value(expression):
    """The audit, by enumeration: on every kind of value a template can reach, reading every
    attribute name (by item and by the attr filter), every filter and test, and every way of
    turning it into text, gives the reference's result or a refusal."""
    source = _PROBE.replace("EXPR", expression)
    conversation = [{"role": "user", "content": "hi"}]
    attributes, filters, tests = _names()
    outcomes = [compare(source, conversation, False, {"how": how, "name": name})
                for how, names in (("item", attributes), ("attr", attributes), ("filter", filters), ("test", tests))
                for name in names]
    outcomes += [compare(source, conversation, False, {"how": how, "name": ""})
                 for how in ("print", "string", "tilde", "percent", "list", "json")]
    assert "same" in outcomes
