"""SHA-256 without OpenSSL: CPython's own implementation (what hashlib falls back to).
`import hashlib` loads OpenSSL's libcrypto, ~3 ms of every `vmkit ls` (which hashes each
spec), restore and hand-out; vmkit hashes only a few short strings."""

from __future__ import annotations

try:
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # Python >= 3.12
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
