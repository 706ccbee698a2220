"""Whether a process of this host still runs: the one test behind every "left by a dead run" cleanup
(bundle temporaries, local job folders, a phone lock taken by a killed host)."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a process this account may not signal (another user's) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
