"""The one error type for expected failures: bad input, a malformed file, a request this machine cannot serve.

Every guard in crfcore raises :class:`InputError` (a ``ValueError``, so ``except ValueError`` keeps working) with a
message naming the argument or file, the field, what was expected, what was given and the fix. The CLI prints it as
``crfcore COMMAND: error: MESSAGE`` and exits 2; anything else that escapes is a bug in crfcore, printed with its
traceback and a line saying so.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """An expected failure whose message names the argument or file, the field and the fix."""
