"""Canaries for the hostile corpora: objects and code that, if anything ever runs them, write the
file named in $PACKAGER_TEST_CANARY, so a test can prove that nothing from a folder ran."""

from __future__ import annotations

CANARY_ENV = "PACKAGER_TEST_CANARY"


class Canary:
    """Unpickling this writes the file named in $PACKAGER_TEST_CANARY: proof that pickle ran."""

    def __reduce__(self):
        return (exec, (f"open(__import__('os').environ[{CANARY_ENV!r}], 'w').write('pickle ran')",))
