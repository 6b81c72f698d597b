"""Storage errors that no retry can fix: a full disk or quota, a read-only filesystem, a missing permission.

A trial that hits one stops the sweep at once (exit status 74) instead of
training again only to fail the same way; this module is torch- and Ray-free
so the trainable, the driver and the store share one definition.
"""
from __future__ import annotations

import errno as errnos
from typing import Optional

STORAGE_ERRNOS = frozenset({errnos.ENOSPC, errnos.EDQUOT, errnos.EROFS, errnos.EACCES, errnos.EPERM})
# Object stores' errors carry no errno; their words do.
STORAGE_WORDS = (("no space left", errnos.ENOSPC), ("disk quota exceeded", errnos.EDQUOT),
                 ("read-only file system", errnos.EROFS), ("permission denied", errnos.EACCES),
                 ("accessdenied", errnos.EACCES), ("access denied", errnos.EACCES))


def storage_errno(exc: Optional[BaseException]) -> Optional[int]:
    """The errno of a storage error no retry can fix, or None: from the exception's `errno` (the store's
    StoreError keeps the one it wrapped), its message's words, or its causes."""
    for _ in range(8):
        if exc is None:
            return None
        code = getattr(exc, "errno", None)
        if code in STORAGE_ERRNOS:
            return code
        text = str(exc).lower()
        for words, word_code in STORAGE_WORDS:
            if words in text:
                return word_code
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
