"""Building artifacts: the options (``options``), what every variant shares (``prepare``), one
variant's staging and publishing (``variant``, with ``packager.publish``), ``--precision
auto`` (``auto``), the manifest and the model card written into each (``manifest``,
``model_card``), the whole build (``pipeline``), its result (``result``), ``packager validate``
(``validate``) and the packaging spec (``spec``).

The names below are imported when first used, so importing one module of the builder does not
load the whole pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"BuildOptions": "options", "BuildResult": "result", "VariantResult": "result", "build": "pipeline",
           "validate": "validate"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'packager.builder' has no attribute {name!r}")
    return getattr(importlib.import_module(f"packager.builder.{_PUBLIC[name]}"), name)
