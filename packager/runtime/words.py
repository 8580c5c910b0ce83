"""Word tokenization: sentence-transformers' WhitespaceTokenizer, which the legacy WordEmbeddings
(the average_word_embeddings_glove models) and BoW input modules tokenize with, repeated step by
step in plain Python (the reference is plain Python too: ``str.split``, ``str.strip``,
``str.lower`` and set and dict lookups), so each text gets the reference's ids exactly.

``WordTokenizer`` offers the part of ``tokenizers.Tokenizer`` that ``text.TextEncoder`` calls
(``encode``, ``encode_batch``, ``id_to_token``), so truncation to the verb's length and padding
stay the encoder's, one way for every tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ArtifactIntegrityError, InvalidInputError
from .files import read_text
from .routes import INT32_LIMIT, TokenizerSpec, WordsSpec

# A vocabulary file: GloVe's 2.2 million words take about 45 MB as JSON.
VOCABULARY_LIMIT = 1 << 30


class WordEncoding(NamedTuple):
    """One text's word ids (no segments: every type id is 0)."""

    ids: list[int]
    type_ids: list[int]


class WordTokenizer:
    """A vocabulary and ``WordsSpec``'s rules; ``max_length`` keeps the first ids of a text (the
    reference's ``tokens[:max_seq_length]``), None keeps them all."""

    def __init__(self, vocabulary: dict[str, int], words: WordsSpec, *, max_length: int | None = None) -> None:
        self._vocabulary = vocabulary
        self._words = words
        self._stop_words = frozenset(words.stop_words)
        self._max_length = max_length
        self._tokens: dict[int, str] | None = None

    @classmethod
    def from_str(cls, text: str, words: WordsSpec, *, where: str) -> WordTokenizer:
        """The tokenizer of a vocabulary file's text: a JSON object of word -> id."""
        try:
            vocabulary = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ArtifactIntegrityError(f"{where}: not a JSON vocabulary ({type(e).__name__})") from None
        if not isinstance(vocabulary, dict) or not all(
                type(i) is int and 0 <= i <= INT32_LIMIT for i in vocabulary.values()):
            raise ArtifactIntegrityError(f"{where}: a word vocabulary must be an object of word -> id in "
                                         f"0..{INT32_LIMIT}")
        return cls(vocabulary, words)

    @classmethod
    def open(cls, root: Path, spec: TokenizerSpec) -> WordTokenizer:
        """The word tokenizer of a route whose ``spec`` has ``words``."""
        if spec.words is None:
            raise ArtifactIntegrityError(f"{spec.file}: not a word tokenizer's vocabulary")
        text = read_text(root / spec.file, limit=VOCABULARY_LIMIT, error=ArtifactIntegrityError)
        return cls.from_str(text, spec.words, where=spec.file)

    def truncating(self, max_length: int) -> WordTokenizer:
        """This tokenizer keeping at most ``max_length`` ids per text (vocabulary shared)."""
        return WordTokenizer(self._vocabulary, self._words, max_length=max_length)

    def tokenize(self, text: str) -> list[int]:
        """WhitespaceTokenizer.tokenize: each whitespace-separated word as it is, then stripped of
        punctuation, then lowercased; the first form that is a stop word drops the word, the first
        in the vocabulary gives its id. (The reference skips the vocabulary lookup of an empty
        stripped form, but looks the same empty string up as the lowercased form right after.)"""
        if self._words.lowercase:
            text = text.lower()
        ids = []
        for word in text.split():
            stripped = word.strip(self._words.punctuation)
            for form in (word, stripped, stripped.lower()):
                if form in self._stop_words:
                    break
                if form in self._vocabulary:
                    ids.append(self._vocabulary[form])
                    break
        return ids

    def encode(self, text: Any, add_special_tokens: bool = False) -> WordEncoding:
        """One text's ids, truncated (a word tokenizer adds no special tokens)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"a word-tokenized route takes texts, not {type(text).__name__}")
        ids = self.tokenize(text)[: self._max_length]
        return WordEncoding(ids, [0] * len(ids))

    def encode_batch(self, texts: list[Any], add_special_tokens: bool = False) -> list[WordEncoding]:
        return [self.encode(text) for text in texts]

    def id_to_token(self, index: int) -> str | None:
        if self._tokens is None:
            self._tokens = {i: word for word, i in self._vocabulary.items()}
        return self._tokens.get(index)

    def sample_words(self, count: int) -> list[str]:
        """Up to ``count`` vocabulary words that tokenize to their own id, from the first ones."""
        found = []
        for word, index in self._vocabulary.items():
            if self.tokenize(word) == [index]:
                found.append(word)
                if len(found) == count:
                    break
        return found
