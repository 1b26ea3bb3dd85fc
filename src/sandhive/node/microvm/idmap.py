"""A read-only view of a template rootfs with its owners shifted back to real ids.

Template trees are stored owned by the canonical uid range (userns.BASE + id) because containers run in a
user namespace. A microVM guest has no such namespace: its disk must hold the real ids (root is 0). An
idmapped bind mount (`node/idmap.py`) presents the tree that way without copying or chowning it: a file
stored as BASE+n is seen as n. `mkfs.ext4 -d` then reads ownership through the view.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import idmap, userns


@contextlib.contextmanager
def unshifted_view(tree: Path) -> Iterator[Path]:
    """Yield a temporary read-only path showing `tree` with real (unshifted) owners."""
    with tempfile.TemporaryDirectory(prefix="sandhive-idmap-") as target, \
            idmap.shifted_view(tree, Path(target), userns.BASE, 0, userns.SIZE) as view:
        yield view
