"""CRC32C, computed by crcmod's C extension."""

from __future__ import annotations

import crcmod.predefined

crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def crc_extension_in_use() -> bool:
    """True when crcmod runs its C extension rather than its pure-Python fallback."""
    import sys

    return bool(getattr(sys.modules["crcmod.crcmod"], "_usingExtension", False))
