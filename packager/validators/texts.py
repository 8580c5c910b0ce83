"""Texts for the parity gate: the built-in probe set and user-supplied validation data.

Real text comes from a corpus every CPython ships: ``pydoc_data.topics``, the Python language
reference (about 465k characters of English prose). Hand-written lines are added only for
what no shipped corpus covers reliably: empty and whitespace input, and non-Latin scripts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from packager.errors import UsageError
from packager.runtime.files import read_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_HEADING_RULE = re.compile(r"^[*=\-~^]{3,}$")

# Scripts, normalisation and segmentation cases: each line exercises a tokenizer path that
# English prose does not (combining marks, CJK without spaces, right-to-left, ZWJ emoji,
# full-width forms, zero-width and control characters).
UNICODE_PROBES = (
    "Café, naïve, façade: résumé written with precomposed accents.",
    "Cafe\u0301 and nai\u0308ve written with combining accents.",
    "机器学习模型的部署需要可靠的工具链。",
    "機械学習モデルを本番環境にデプロイする。",
    "기계 학습 모델을 배포합니다.",
    "Развёртывание моделей машинного обучения в продакшене.",
    "Η ανάπτυξη μοντέλων μηχανικής μάθησης.",  # noqa: RUF001 (Greek script on purpose: a tokenizer path of its own)
    "نشر نماذج التعلم الآلي في بيئة الإنتاج.",
    "פריסת מודלים של למידת מכונה.",
    "मशीन लर्निंग मॉडल को उत्पादन में लगाना।",
    "การปรับใช้โมเดลการเรียนรู้ของเครื่อง",
    "Deploy the 模型 в production with ñ, ß and 🚀 in one line.",
    "Family emoji 👩\u200d👩\u200d👧\u200d👦 and flags 🇫🇷🇯🇵 joined by ZWJ.",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and ①②③ circled digits.",  # noqa: RUF001 (full-width forms on purpose: the probe is about them)
    "zero\u200bwidth\u200bspaces, no\u00a0break\u00a0spaces and a soft\u00adhyphen.",
    "tabs\tand\nnewlines\r\nand a bell \x07 control character.",
    "∑ᵢ xᵢ² ≤ ∞ — maths, arrows → and quotes «like these».",
)
EDGE_PROBES = ("", " ", "a", "OK", "?", "...", "12345")
# Calibration's own short inputs and other scripts: none of them is a probe. "\t" is, for the
# tokenizers that drop whitespace (WordPiece, SentencePiece), a text with no content tokens: only
# the special ones, as the probes "" and " ", which int8 can move furthest (all-mpnet-base-v2:
# cosine 0.965 with 17 MatMuls in float, when nothing like it was calibrated). A byte-level BPE
# tokenizes it as a token of its own.
CALIBRATION_SHORT = ("\t", "b", "No.", "!", "yes", "2024", "  x  ", "Hi there")
CALIBRATION_SCRIPTS = (
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "تعمل الشبكة على نقل البيانات بين الحواسيب بسرعة عالية.",
    "Москва расположена на берегах реки Москвы в центре России.",  # noqa: RUF001 (Cyrillic script on purpose: calibration in another script)
    "भारत एक विशाल देश है जिसमें अनेक भाषाएँ बोली जाती हैं।",
)
# Long probes stop here: a tokenizer without a length limit has no truncation boundary to probe.
LONGEST_PROBE = 8192
# Real sentences among the probes (every 4th of the corpus), and for calibration (every 4th from
# the third): the gate never judges on what a quantizer calibrated on.
TYPICAL_PROBES = 144
CALIBRATION_TEXTS = 256
# Validation and calibration files: texts, not corpora (the gate runs every input through torch).
INPUTS_LIMIT = 64 << 20


@lru_cache(maxsize=1)
def real_sentences() -> tuple[str, ...]:
    """Sentences of 4 to 60 words from the Python language reference, in a fixed order."""
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        for paragraph in _prose_paragraphs(topics[key]):
            for sentence in _SENTENCE_END.split(paragraph):
                if 4 <= len(sentence.split()) <= 60:
                    sentences.append(sentence)
    return tuple(dict.fromkeys(sentences))  # de-duplicated, order kept


def _prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text: no indented code blocks, no headings."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or lines[0].startswith(" ") or any(_HEADING_RULE.match(ln.strip()) for ln in lines):
            continue
        paragraphs.append(" ".join(ln.strip() for ln in lines))
    return paragraphs


def probe_texts(count_tokens: Callable[[str], int], max_length: int) -> list[str]:
    """The built-in parity probes: edge cases, typical sentences, texts exactly at and around
    ``max_length`` tokens (special tokens included), texts of 5x and 12x ``max_length``, and
    other scripts."""
    sentences = real_sentences()
    typical = list(sentences[0::4][:TYPICAL_PROBES])
    long_texts = [_text_of_at_least(sentences[start:], count_tokens, min(factor * max_length, LONGEST_PROBE))
                  for start, factor in ((100, 5), (300, 12))]
    boundary = _boundary_texts(sentences, count_tokens, max_length) if max_length < LONGEST_PROBE else []
    return [*EDGE_PROBES, *typical, *boundary, *long_texts, *UNICODE_PROBES]


def calibration_inputs(*, pairs: bool) -> list:
    """The built-in calibration set: real sentences of every length, a few paragraphs, other
    scripts; for cross-encoders, short queries each paired with several of them."""
    sentences = real_sentences()[2::4]
    texts = [*sentences[:CALIBRATION_TEXTS - 32], *[" ".join(sentences[i : i + 6]) for i in range(300, 420, 6)],
             *CALIBRATION_SCRIPTS, *CALIBRATION_SHORT]  # the smallest inputs are where int8 errors show most
    if not pairs:
        return texts
    queries = [t for t in texts if len(t.split()) <= 10][:24]
    return [(query, texts[(7 * q + d) % len(texts)]) for q, query in enumerate(queries) for d in range(8)]


def probe_pairs(count_tokens: Callable[[tuple[str, str]], int], max_length: int) -> list[tuple[str, str]]:
    """Cross-encoder probes: six real queries, each with the same documents (edge cases, typical,
    other scripts, far beyond max_length), plus pairs cut to exactly max_length - 1, max_length
    and max_length + 1 tokens. Pairs sharing a query form one ranking group."""
    sentences = real_sentences()
    queries = [s for s in sentences[7::97] if len(s.split()) <= 12][:6]
    long_document = _text_of_at_least(sentences[200:], lambda t: count_tokens(("", t)),
                                      min(3 * max_length, LONGEST_PROBE))
    documents = ["", "?", *sentences[11::211][:4], UNICODE_PROBES[2], UNICODE_PROBES[11], long_document]
    pairs = [(query, document) for query in queries for document in documents]
    words = " ".join(sentences[500:]).split()
    for target in (max_length - 1, max_length, max_length + 1) if max_length < LONGEST_PROBE else ():
        pairs.append((queries[0], _fewest_words(words, lambda t: count_tokens((queries[0], t)), target)))
    return pairs


def _text_of_at_least(sentences: tuple[str, ...], count_tokens: Callable[[str], int], tokens: int) -> str:
    """Consecutive real sentences adding up to at least ``tokens`` tokens (or all of them)."""
    end = 0
    while end < len(sentences):
        end = min(len(sentences), end + 20)
        if count_tokens(" ".join(sentences[:end])) >= tokens:
            break
    return " ".join(sentences[:end])


def _boundary_texts(sentences: tuple[str, ...], count_tokens: Callable[[str], int], max_length: int) -> list[str]:
    """Real text cut to max_length - 1, max_length and max_length + 1 tokens: the off-by-one
    cases of truncation."""
    words = " ".join(sentences[500:]).split()
    return [_fewest_words(words, count_tokens, target) for target in (max_length - 1, max_length, max_length + 1)]


def _fewest_words(words: list[str], count_tokens: Callable[[str], int], target: int) -> str:
    """The shortest prefix of ``words`` that counts ``target`` tokens (or just more)."""
    low, high = 1, min(len(words), 4 * target)
    while low < high:
        mid = (low + high) // 2
        if count_tokens(" ".join(words[:mid])) >= target:
            high = mid
        else:
            low = mid + 1
    text = " ".join(words[: low - 1])
    for _ in range(8):  # top up with one-token words to land exactly on the target
        if count_tokens(text) >= target:
            break
        text += " a"
    return text


def read_inputs(path: Path, *, pairs: bool = False) -> list:
    """Validation inputs from a file. Texts: JSON Lines (``.jsonl``: each line a string or
    {"text": ...}) or plain text, one per line. Pairs (for cross-encoders): JSON Lines of
    [query, document] or {"query": ..., "document": ...}, or plain text with a tab between the
    two. Blank lines are skipped."""
    try:
        lines = read_text(path, limit=INPUTS_LIMIT, error=UsageError).splitlines()
    except FileNotFoundError:
        raise UsageError(f"cannot read validation data {path}: no such file") from None
    jsonl = path.suffix in (".jsonl", ".ndjson")
    items = [_parse_line(path, n, line=line, jsonl=jsonl, pairs=pairs)
             for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise UsageError(f"{path}: no inputs")
    return items


def _parse_line(path: Path, number: int, *, line: str, jsonl: bool, pairs: bool) -> str | tuple[str, str]:
    where = f"{path}:{number}"
    if jsonl:
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise UsageError(f"{where}: not valid JSON ({e})") from None
    else:
        item = line.split("\t") if pairs else line
    if pairs:
        if isinstance(item, dict):
            item = [item.get("query"), item.get("document")]
        if not isinstance(item, list) or len(item) != 2 or not all(isinstance(t, str) for t in item):
            raise UsageError(f'{where}: expected a pair: [query, document], {{"query": .., "document": ..}} or '
                             "two texts separated by a tab")
        return item[0], item[1]
    text = item.get("text") if isinstance(item, dict) else item
    if not isinstance(text, str):
        raise UsageError(f'{where}: expected a string or an object with a string "text"')
    return text
