"""Probe texts and validation data files."""

from __future__ import annotations

import json

import pytest

from packager.errors import UsageError
from packager.validators.texts import UNICODE_PROBES, probe_texts, read_texts, real_sentences


def test_real_sentences_come_from_a_shipped_corpus():
    sentences = real_sentences()
    assert len(sentences) > 1000
    assert all(4 <= len(s.split()) <= 60 for s in sentences)
    assert len(set(sentences)) == len(sentences)


def test_probes_hit_the_truncation_boundary_exactly():
    count = lambda text: len(text.split()) + 2  # a whitespace "tokenizer" with [CLS] and [SEP]
    probes = probe_texts(count, max_length=40)
    counts = [count(t) for t in probes]
    assert {39, 40, 41} <= set(counts)
    assert max(counts) > 10 * 40  # far beyond max_length too
    assert "" in probes and set(UNICODE_PROBES) <= set(probes)


def test_read_texts_plain_and_jsonl(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first line\n\nsecond line\n")
    assert read_texts(plain) == ["first line", "second line"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(json.dumps("a string") + "\n" + json.dumps({"text": "an object"}) + "\n")
    assert read_texts(jsonl) == ["a string", "an object"]


@pytest.mark.parametrize("name,content,match", [
    ("bad.jsonl", "{oops\n", "not valid JSON"),
    ("bad.jsonl", '{"label": 1}\n', "string"),
    ("empty.txt", "\n\n", "no texts"),
])
def test_read_texts_rejects_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=match):
        read_texts(path)


def test_read_texts_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_texts(tmp_path / "missing.txt")
