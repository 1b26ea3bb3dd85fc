"""Reseeding the kernel's random number generator from a seed that `/init` brings.

A microVM clone resumes with its template snapshot's kernel RNG state: without a fresh seed, two
clones would read the same bytes from /dev/urandom. Writing to /dev/urandom alone mixes the seed in
but leaves the CRNG's current key in use until its next scheduled reseed (up to a minute), so envd
credits the seed (RNDADDENTROPY) and forces the reseed (RNDRESEEDCRNG). Both need CAP_SYS_ADMIN in
the initial user namespace: envd has it as a VM guest's process 1; in a container (whose kernel is the
host's and was never cloned) it does not, and the plain write is all that happens.
"""

from __future__ import annotations

import fcntl
import struct

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
URANDOM = "/dev/urandom"


def reseed(seed: bytes) -> bool:
    """Mix `seed` into the kernel's pool; True if it was also credited and the CRNG reseeded from it."""
    with open(URANDOM, "wb", buffering=0) as pool:
        try:
            fcntl.ioctl(pool, RNDADDENTROPY, struct.pack("ii", len(seed) * 8, len(seed)) + seed)
            fcntl.ioctl(pool, RNDRESEEDCRNG)
            return True
        except OSError:  # not privileged in the initial user namespace
            pool.write(seed)
            return False
