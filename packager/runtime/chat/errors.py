"""Why a render of a chat template stopped: the template's own failure, a bound, or any other
refusal. All three are ``InvalidInputError``: the input is what the template cannot render."""

from __future__ import annotations

from ..errors import InvalidInputError


class TemplateRefusedError(InvalidInputError):
    """The chat template failed or exceeded its bounds on this input."""


class TemplateFailedError(TemplateRefusedError):
    """The template itself failed on this input (its ``raise_exception``, an undefined operation,
    the sandbox's SecurityError), as it does in the reference; anything else this package raises
    is its own refusal, where transformers would have rendered."""


class BoundExceededError(TemplateRefusedError):
    """A render stopped by the sandbox's bounds (time, iterations, sizes, recursion, memory), not
    by the template: transformers would have rendered it, so nothing may stand in for its result,
    and the deadline depends on how busy the machine is, so a refusal may not be remembered."""
