"""A chain as read from its folder: its modules (a Router's nested ones included), their
configs, the routes they make, and the digests of every source file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packager.chain.source import Source
from packager.runtime.enums import ChainKind, ModuleKind
from packager.runtime.manifest import FileDigest

DEFAULT_ROUTE = "default"
# A CLIP-style Transformer's modalities: each becomes a route of its own, named by its modality.
IMAGE_AND_TEXT = ("text", "image")
# A vision-language Transformer's (Qwen-VL's): every input becomes chat messages, whose images
# are tokens of the text. Video is among them as sentence-transformers saves such a model; the
# runtime takes no videos.
VISION_MESSAGES = frozenset({"text", "image", "message", "video"})


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    path: str  # relative to the chain folder
    type: str
    kind: ModuleKind
    config: dict[str, Any]
    routes: dict[str, tuple[ModuleSpec, ...]] = field(default_factory=dict)  # a Router's pipelines

    @property
    def modalities(self) -> set[str]:
        """The modalities a Transformer takes (``modality_config``'s keys; text by default)."""
        if self.kind not in (ModuleKind.TRANSFORMER, ModuleKind.MLM_TRANSFORMER):
            return set()
        return set(self.config.get("modality_config") or {"text": None})

    @property
    def takes_vision_messages(self) -> bool:
        """A vision-language Transformer: its chat messages carry images."""
        return {"image", "message"} <= self.modalities <= VISION_MESSAGES

    @property
    def transformer_task(self) -> str | None:
        if self.kind is ModuleKind.MLM_TRANSFORMER:
            return self.config.get("transformer_task", "fill-mask")
        if self.kind is ModuleKind.TRANSFORMER:
            return self.config.get("transformer_task", "feature-extraction")
        return None


@dataclass(frozen=True)
class ChainSpec:
    source: Source
    kind: ChainKind
    modules: tuple[ModuleSpec, ...]
    files: tuple[FileDigest, ...]
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def pipelines(self) -> dict[str, tuple[ModuleSpec, ...]]:
        """The module sequence of every route: each of a Router's routes in the Router's place
        (after the modules before it, before the modules after it), or the whole chain as the
        one default route, or for a CLIP-style chain one route per modality ("text", "image")."""
        at = self.router_index()
        if self.takes_images:
            return {modality: self.modules for modality in IMAGE_AND_TEXT}
        if at is None:
            return {DEFAULT_ROUTE: self.modules}
        before, router, after = self.modules[:at], self.modules[at], self.modules[at + 1 :]
        return {route: (*before, *children, *after) for route, children in router.routes.items()}

    @property
    def takes_images(self) -> bool:
        """A CLIP-style chain: no Router, and a first module that takes text and images."""
        return self.router_index() is None and self.modules[0].modalities == set(IMAGE_AND_TEXT)

    def router_index(self) -> int | None:
        """Where the (first) Router is, if there is one."""
        return next((i for i, m in enumerate(self.modules) if m.kind is ModuleKind.ROUTER), None)

    def all_modules(self) -> list[ModuleSpec]:
        return flatten(self.modules)


def flatten(modules: tuple[ModuleSpec, ...]) -> list[ModuleSpec]:
    """Every module, a Router's nested ones included."""
    return [m for top in modules for m in (top, *[c for cs in top.routes.values() for c in cs])]
