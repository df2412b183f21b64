"""Random bytes from the OS's CSPRNG, fetched in batches.

One ``getrandom`` system call per handshake (a connection id, websockets' connection UUID)
was a tenth of a handshake; a 12 KB batch serves hundreds. A forked child drops its parent's
batch, so two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

BATCH = 12 * 1024

_batch = b""
_at = BATCH
_lock = threading.Lock()


def random_bytes(count: int) -> bytes:
    """``count`` (at most BATCH) bytes from ``os.urandom``, as from ``secrets.token_bytes``."""
    global _batch, _at
    with _lock:
        if _at + count > BATCH:
            _batch, _at = os.urandom(BATCH), 0
        chunk = _batch[_at : _at + count]
        _at += count
    return chunk


def _forget() -> None:
    global _at
    _at = BATCH


os.register_at_fork(after_in_child=_forget)
