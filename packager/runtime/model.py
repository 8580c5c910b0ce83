"""What every loaded artifact has: its manifest, a runner per route, the prompt each verb gets,
and a clear error for the verbs of sentence-transformers its chain kind does not have. The chain
kinds' own verbs live in ``embedding``, ``sparse_encoder`` and ``cross_encoder``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError, UnsupportedVerbError
from .inputs import as_texts, check_positive, check_unicode
from .manifest import PROMPT_LENGTH, Manifest, OutputMeaning
from .runner import RouteRunner

# encode_query / encode_document fall back to these saved prompts, in this order, as sentence-transformers does.
_VERB_PROMPTS = {"encode_query": ("query",), "encode_document": ("document", "passage", "corpus")}


class Unsupported:
    """A verb of sentence-transformers that a chain kind does not have: calling it raises
    ``UnsupportedVerbError`` naming the verbs it does have. One instance per name (it learns
    its name when the class is made)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, model: Any, owner: type | None = None) -> Any:
        def verb(*args: Any, **kwargs: Any) -> Any:
            raise UnsupportedVerbError(f"{self.name}() is not available for a {model.manifest.chain_kind.value} "
                                       f"artifact; it supports: {', '.join(model.verbs)}")
        return verb


class Model:
    """What every loaded artifact has. Models hold no per-call state, so one instance can serve
    many threads."""

    verbs: tuple[str, ...] = ()

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        self.manifest = manifest
        self.path = root
        self._runners = {r.name: RouteRunner(root, manifest.format, r, threads=threads) for r in manifest.routes}

    @property
    def max_seq_length(self) -> int:
        return self._runner(next(iter(self.manifest.verbs))).spec.tokenizer.max_length

    def _runner(self, verb: str) -> RouteRunner:
        route = self.manifest.verbs.get(verb)
        if route is None:
            raise UnsupportedVerbError(f"this model has no route for {verb}(); it has routes for: "
                                       f"{', '.join(self.manifest.verbs)}")
        return self._runners[route]

    def has_output(self, verb: str, meaning: OutputMeaning | str) -> bool:
        """Whether ``verb``'s route outputs ``meaning`` (e.g. "token_embeddings")."""
        return self._runner(verb).has(OutputMeaning(getattr(meaning, "value", meaning)))

    def prompt_for(self, verb: str, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt sentence-transformers would prepend for this verb and these arguments."""
        prompts = self.manifest.prompts
        for name, value in (("prompt", prompt), ("prompt_name", prompt_name)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a string or None, got {type(value).__name__}")
        if prompt is not None:
            check_unicode(prompt, "the prompt")
            return prompt
        if prompt_name is None:
            prompt_name = next((p for p in _VERB_PROMPTS.get(verb, ()) if p in prompts), None)
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise InvalidInputError(f"prompt_name {prompt_name!r} is not defined; prompts: {sorted(prompts)}")
            return prompts[prompt_name]
        return prompts[self.manifest.default_prompt_name] if self.manifest.default_prompt_name else None

    def _embed(self, inputs: Any, verb: str, meaning: OutputMeaning, *, prompt_name: str | None,
               prompt: str | None, batch_size: int) -> tuple[list[np.ndarray], bool]:
        """Rows of ``meaning`` for the texts in ``inputs``, and whether a single string came in."""
        texts, single = as_texts(inputs)
        check_positive(batch_size, "batch_size")
        runner = self._runner(verb)
        if not runner.has(meaning):
            available = [o.meaning.value for o in runner.spec.outputs]
            raise InvalidInputError(f"output_value {meaning.value!r} is not in this artifact; it has: {available}")
        prefixed, prompt_length = self._with_prompt(runner, list(texts), self.prompt_for(verb, prompt, prompt_name))
        return runner.run(prefixed, meaning, batch_size=batch_size, prompt_length=prompt_length), single

    @staticmethod
    def _with_prompt(runner: RouteRunner, inputs: list, prefix: str | None) -> tuple[list, int]:
        """Prepend the prompt (to the first text of a pair) and measure it for graphs that pool
        without the prompt's tokens. An empty prompt is no prompt, as in sentence-transformers."""
        if not prefix:
            return inputs, 0
        inputs = [prefix + x if isinstance(x, str) else (prefix + x[0], x[1]) for x in inputs]
        return inputs, runner.text.prompt_length(prefix) if PROMPT_LENGTH in runner.spec.inputs else 0
