"""Running a call that may block on a FIFO, so that a test of it fails rather than hangs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def unblocked(fifo: Path, call: Callable[[], object]) -> object:
    """``call()``'s result, run in a thread: where it is still blocked on ``fifo`` after a minute (no
    speed is measured: a blocked open never returns), a writer is opened and closed, so that the
    test fails rather than hangs."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the blocked reader gets EOF
        thread.join(timeout=60)
        pytest.fail(f"reading {fifo} blocked until a writer came")
    return result[0]
