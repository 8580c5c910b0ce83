"""What every loaded artifact has: its manifest, a runner per route, the prompt each verb gets,
and a clear error for the verbs of sentence-transformers its chain kind does not have. The chain
kinds' own verbs live in ``embedding``, ``sparse_encoder`` and ``cross_encoder``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backends import Compute
from .enums import OutputMeaning
from .errors import InvalidInputError, UnsupportedVerbError
from .image_inputs import is_image
from .inputs import as_items, as_texts, check_positive, check_unicode
from .manifest import Manifest
from .messages import as_messages
from .routes import VerbSpec
from .runner import RouteRunner

# encode_query / encode_document fall back to these saved prompts, in this order, as sentence-transformers does.
_VERB_PROMPTS = {"encode_query": ("query",), "encode_document": ("document", "passage", "corpus")}


def resolve_prompt(verb: str, prompts: dict[str, str], default_prompt_name: str | None, *, prompt: str | None = None,
                   prompt_name: str | None = None) -> str | None:
    """The prompt sentence-transformers uses for ``verb``: ``prompt``, else the named one, else the
    verb's own (encode_query: "query"; encode_document: "document", "passage", "corpus"), else the
    default one."""
    if prompt is not None:
        return prompt
    if prompt_name is None:
        prompt_name = next((p for p in _VERB_PROMPTS.get(verb, ()) if p in prompts), None)
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise InvalidInputError(f"prompt_name {prompt_name!r} is not defined; prompts: {sorted(prompts)}")
        return prompts[prompt_name]
    return prompts[default_prompt_name] if default_prompt_name else None


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

    def __init__(self, root: Path, manifest: Manifest, *, threads: int | None = None,
                 float_products: bool = False) -> None:
        self.manifest = manifest
        self.path = root
        compute = Compute.of(manifest, float_products=float_products)
        self._runners = {r.name: RouteRunner(root, manifest.format, r, threads=threads, compute=compute)
                         for r in manifest.routes}

    @property
    def max_seq_length(self) -> int:
        """The first verb's truncation length (sentence-transformers' ``max_seq_length``)."""
        verb = next(iter(self.manifest.verbs.values()))
        return verb.max_length or self._runners[verb.route].spec.text.max_length

    def _verb(self, verb: str) -> VerbSpec:
        spec = self.manifest.verbs.get(verb)
        if spec is None:
            raise UnsupportedVerbError(f"this model has no route for {verb}(); it has routes for: "
                                       f"{', '.join(self.manifest.verbs)}")
        return spec

    def _runner(self, verb: str) -> RouteRunner:
        return self._runners[self._verb(verb).route]

    def _run(self, verb: str, inputs: list[Any], meaning: OutputMeaning, *, prompt_name: str | None, prompt: str | None,
             batch_size: int) -> list[np.ndarray]:
        """``meaning`` for each input as ``verb`` computes it, with the prompt sentence-transformers
        would use."""
        check_positive(batch_size, "batch_size")
        spec = self._verb(verb)
        return self._runners[spec.route].run(inputs, meaning, batch_size=batch_size, verb=spec,
                                             prompt=self.prompt_for(verb, prompt, prompt_name))

    def has_output(self, verb: str, meaning: OutputMeaning | str) -> bool:
        """Whether ``verb``'s route outputs ``meaning`` (e.g. "token_embeddings")."""
        return self._runner(verb).has(OutputMeaning(getattr(meaning, "value", meaning)))

    def prompt_for(self, verb: str, prompt: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt sentence-transformers would use for this verb and these arguments."""
        for name, value in (("prompt", prompt), ("prompt_name", prompt_name)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a string or None, got {type(value).__name__}")
        if prompt is not None:
            check_unicode(prompt, "the prompt")
        return resolve_prompt(verb, self.manifest.prompts, self.manifest.default_prompt_name, prompt=prompt,
                              prompt_name=prompt_name)

    def _embed(self, inputs: Any, verb: str, meaning: OutputMeaning, *, prompt_name: str | None,
               prompt: str | None, batch_size: int, fetch_urls: bool = False,
               image_strings: bool = True) -> tuple[list[np.ndarray], bool]:
        """Rows of ``meaning`` for the inputs, in input order, and whether a single input came in:
        texts through the verb's route, images (for a chain that takes them) through its image
        route; strings name images (paths, URLs, data URIs) unless ``image_strings`` is False."""
        spec = self._verb(verb)
        runner = self._runner(verb)
        if not runner.has(meaning):
            available = [o.meaning.value for o in runner.spec.outputs]
            raise InvalidInputError(f"output_value {meaning.value!r} is not in this artifact; it has: {available}")
        if runner.vision is not None:  # every input a conversation, images inside it
            items, single = as_messages(inputs)
            check_positive(batch_size, "batch_size")
            return runner.run_messages(items, meaning, batch_size=batch_size, verb=spec, fetch_urls=fetch_urls,
                                       strings=image_strings, prompt=self.prompt_for(verb, prompt, prompt_name)), single
        if spec.image_route is None:
            texts, single = as_texts(inputs)
            return self._run(verb, texts, meaning, prompt_name=prompt_name, prompt=prompt,
                             batch_size=batch_size), single
        return self._embed_mixed(inputs, verb, spec, meaning, prompt_name=prompt_name, prompt=prompt,
                                 batch_size=batch_size, fetch_urls=fetch_urls, image_strings=image_strings)

    def _embed_mixed(self, inputs: Any, verb: str, spec: VerbSpec, meaning: OutputMeaning, *,
                     prompt_name: str | None, prompt: str | None, batch_size: int, fetch_urls: bool,
                     image_strings: bool) -> tuple[list[np.ndarray], bool]:
        """Texts through the verb's route and images through its image route (a CLIP-style chain)."""
        assert spec.image_route is not None

        def image(item: Any) -> bool:
            return is_image(item, strings=image_strings)

        items, single = as_items(inputs, image)
        images = [i for i, item in enumerate(items) if image(item)]
        image_at = set(images)
        text_at = [i for i in range(len(items)) if i not in image_at]
        for i in text_at:
            check_unicode(items[i], f"item {i}")
        rows: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        if images:
            image_runner = self._runners[spec.image_route]
            if not image_runner.has(meaning):
                raise InvalidInputError(f"output_value {meaning.value!r} is not computed for images; images give "
                                        f"{[o.meaning.value for o in image_runner.spec.outputs]}")
            check_positive(batch_size, "batch_size")
            found = image_runner.run_images([items[i] for i in images], meaning, batch_size=batch_size,
                                            fetch_urls=fetch_urls, positions=images)
            for i, row in zip(images, found, strict=True):
                rows[i] = row
        if text_at or not images:
            found = self._run(verb, [items[i] for i in text_at], meaning, prompt_name=prompt_name, prompt=prompt,
                              batch_size=batch_size)
            for i, row in zip(text_at, found, strict=True):
                rows[i] = row
        return rows, single
