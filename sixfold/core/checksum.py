"""CRC32C (Castagnoli), computed by the `crc32c` package: with the CPU's CRC instruction
where there is one (SSE 4.2, ARMv8), about 30 times faster than a table on a 4 KiB page,
else its own C implementation. CRCs are on every record sent, stored and read (issue 11)."""

from __future__ import annotations

import crc32c as _crc32c

CHECK_VALUE = 0xE3069283  # CRC32C of b"123456789", the standard check value

# crc32c(data, value=0): the CRC of `data`, continuing from `value` (the CRC of what came
# before). The package's function itself: a wrapper would cost a call per record.
crc32c = _crc32c.crc32c


def crc_hardware_in_use() -> bool:
    """True when the CRC runs on the CPU's CRC instruction."""
    return bool(_crc32c.hardware_based)


assert crc32c(b"123456789") == CHECK_VALUE
