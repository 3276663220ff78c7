"""Start a program in a mount namespace of its own with some folders bound elsewhere.

    unshare --mount --propagation private python -m fastiov_lib.testbeds.local.mountns \\
        --bind SRC DST [--bind SRC DST ...] -- PROGRAM ARGS...

The instrumented containerd hard-codes `/home/cni/cnicmp_logs/...` for its records, and its shims
use `/run/containerd/s/`; run this way, those paths (and the pod network namespaces under
`/run/netns`, and libcni's cache under `/var/lib/cni`) land in the local testbed's work dir and
nothing outside it changes. Private propagation: the binds and every netns mount stay inside the
namespace and vanish with its last process (containerd and its shims).
"""
from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    """Bind the given folders, then exec the program (same PID: the caller's PID file stays right)."""
    if "--" not in argv:
        print("usage: mountns --bind SRC DST ... -- PROGRAM ARGS...", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, program = argv[:split], argv[split + 1:]
    if len(opts) % 3 or any(o != "--bind" for o in opts[::3]) or not program:
        print(f"mountns: expected --bind SRC DST pairs before --, got {opts}", file=sys.stderr)
        return 2
    for i in range(0, len(opts), 3):
        src, dst = opts[i + 1], opts[i + 2]
        res = subprocess.run(["mount", "--bind", src, dst], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"mountns: mount --bind {src} {dst}: {res.stderr.strip()}", file=sys.stderr)
            return 1
    os.execvp(program[0], program)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
