"""Crash points, for the tests that prove crash safety at every write point.

``NGPRECOMPUTED_CRASH=<point>:<k>`` kills the process with SIGKILL (no cleanup at all, as a
node failure or the kernel's OOM killer would) when it reaches ``point`` for the k-th time.
Unset (always, outside those tests), a point costs one dictionary lookup.

Points: ``file`` (a file renamed into place: chunk, shard, manifest, mesh file, info),
``shard`` (a chunk written into a shard still being written), ``fragment`` (a mesh fragment
written), ``finalize`` (between ``transform.json`` and ``info``).
"""

import os
import signal

_SPEC = os.environ.get("NGPRECOMPUTED_CRASH", "")
_POINT, _, _K = _SPEC.partition(":")
_seen = 0


def point(name: str) -> None:
    """A place where a crash must leave nothing a rerun cannot finish."""
    global _seen
    if name != _POINT:
        return
    _seen += 1
    if _seen == int(_K or 1):
        os.kill(os.getpid(), signal.SIGKILL)
