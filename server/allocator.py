"""Memory of large messages goes back to the operating system when they are freed.

glibc raises its mmap threshold each time a large block is freed, so after the first burst of
1 MB requests later ones come from the heap arenas of the threads that made them, and stay with
the process after a burst (a stream cancelled with 100 MB in flight kept them all). A fixed
threshold keeps every block of 128 KiB or more mmapped, returned on free.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_large_blocks_to_the_os() -> bool:
    """Fixes glibc's mmap threshold; False (and nothing changed) on another C library."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator's mmap threshold is left as it is")
        return False
