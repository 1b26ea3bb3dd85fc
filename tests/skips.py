"""Which skips are expected: a test may skip only for a reason on this list, anything else fails the run.

A skip is a test that did not run. The known reasons are facts about the host (no root, a package not
installed, no KVM that boots guests, a backend that cannot run here) or gaps written down in an issue; a
skip for any other reason is a broken rig hiding as a pass, so `tests/conftest.py` turns it into a failure.
Add a pattern here only together with the skip that needs it.
"""

from __future__ import annotations

import re

ALLOWED_SKIPS: tuple[tuple[str, str], ...] = (
    (r"\bneeds? root\b", "the suite runs unprivileged (root-only rigs: mounts, namespaces, chown)"),
    (r"\bis not installed\b|\bis missing\b|\bcannot be imported\b", "a package or tool this host lacks"),
    (r"in the `test` extras", "an optional test dependency"),
    (r"no KVM|boots? guests", "no KVM that boots guests"),
    (r"runs on no platform here", "gVisor finds no platform on this kernel"),
    (r"no OCI backend can run here", "no container backend on this host"),
    (r"cannot create a user namespace here", "user namespaces are disabled on this host"),
    (r"\bcannot run here\b", "a backend's own probe says it cannot run on this host"),
    (r"runsc always sets no_new_privs|sudo cannot work under gVisor", "a gVisor limitation: sudo cannot work under it"),
    (r"need root in the initial user namespace", "RNDADDENTROPY needs the host's root"),
    (r"\(known gap, issue \d+\)", "a gap written down in an issue"),
    (r"httpcore's connection pool lock is not where", "an httpcore internal a regression test pokes at moved"),
    (r"too little memory for \d+ sandboxes", "the density test needs a host whose RAM holds 200 `base` sandboxes"),
)

_PATTERNS = [re.compile(pattern, re.IGNORECASE) for pattern, _ in ALLOWED_SKIPS]


def skip_allowed(reason: str) -> bool:
    """True when `reason` (a skip's message, with or without pytest's "Skipped: " prefix) is a known one."""
    return any(p.search(reason) for p in _PATTERNS)
