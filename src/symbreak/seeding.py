"""Seeds derived from keys, so random streams never depend on global RNG state."""

from __future__ import annotations

import hashlib


def keyed_seed(*key: object) -> int:
    """A 63-bit seed from a key such as ``(seed, step, layer, "q")``.

    Stable across processes, platforms and Python versions (unlike ``hash()``): every
    data-parallel rank and every resumed run derives the same seed from the same key.
    """
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
