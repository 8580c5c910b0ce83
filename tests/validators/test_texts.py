"""Probe texts and validation data files."""

from __future__ import annotations

import json

import pytest

from packager.errors import UsageError
from packager.validators.texts import (
    UNICODE_PROBES,
    calibration_inputs,
    probe_pairs,
    probe_texts,
    read_inputs,
    real_sentences,
)


def test_real_sentences_come_from_a_shipped_corpus():
    sentences = real_sentences()
    assert len(sentences) > 1000
    assert all(4 <= len(s.split()) <= 60 for s in sentences)
    assert len(set(sentences)) == len(sentences)


def test_probes_hit_the_truncation_boundary_exactly():
    def count(text):  # a whitespace "tokenizer" with [CLS] and [SEP]
        return len(text.split()) + 2

    probes = probe_texts(count, max_length=40)
    counts = [count(t) for t in probes]
    assert {39, 40, 41} <= set(counts)
    assert max(counts) > 10 * 40  # far beyond max_length too
    assert "" in probes and set(UNICODE_PROBES) <= set(probes)


def test_calibration_is_apart_from_the_probes_and_covers_their_kinds():
    texts = calibration_inputs(pairs=False)
    assert len(texts) == len(set(texts)) == 256
    assert not set(texts) & set(probe_texts(lambda t: len(t.split()) + 2, max_length=40))
    assert any(not t.split() for t in texts)  # like the probes "" and " ": no content tokens (WordPiece)
    assert len(calibration_inputs(pairs=True)) == 192


def test_read_texts_plain_and_jsonl(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first line\n\nsecond line\n")
    assert read_inputs(plain) == ["first line", "second line"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(json.dumps("a string") + "\n" + json.dumps({"text": "an object"}) + "\n")
    assert read_inputs(jsonl) == ["a string", "an object"]


def test_read_pairs(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('["q1", "d1"]\n{"query": "q2", "document": "d2"}\n')
    assert read_inputs(jsonl, pairs=True) == [("q1", "d1"), ("q2", "d2")]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("q1\td1\nq2\td2\n")
    assert read_inputs(tsv, pairs=True) == [("q1", "d1"), ("q2", "d2")]
    plain = tmp_path / "plain.txt"
    plain.write_text("no tab here\n")
    with pytest.raises(UsageError, match="expected a pair"):
        read_inputs(plain, pairs=True)


def test_probe_pairs_group_by_query_and_hit_the_boundary():
    count = lambda pair: len(pair[0].split()) + len(pair[1].split()) + 3  # noqa: E731
    pairs = probe_pairs(count, max_length=40)
    queries = {q for q, _ in pairs}
    assert len(queries) == 6 and all(sum(q == p[0] for p in pairs) >= 10 for p in pairs[:1] for q in [p[0]])
    assert {39, 40, 41} <= {count(p) for p in pairs}
    assert ("" in {d for _, d in pairs}) and max(count(p) for p in pairs) > 3 * 40


@pytest.mark.parametrize("name,content,match", [
    ("bad.jsonl", "{oops\n", "not valid JSON"),
    ("bad.jsonl", '{"label": 1}\n', "string"),
    ("empty.txt", "\n\n", "no inputs"),
])
def test_read_texts_rejects_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=match):
        read_inputs(path)


def test_read_texts_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        read_inputs(tmp_path / "missing.txt")
