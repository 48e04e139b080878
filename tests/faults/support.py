"""Helpers for the fault tests: the CLI as a user runs it, with a time limit, because
several of these faults used to hang or exhaust memory rather than fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def edlib(*args, timeout: float = 120, env: dict | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """`python -m edlib ARGS` in a subprocess; raises `subprocess.TimeoutExpired` (the test
    fails) if it does not end within `timeout` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "edlib", *map(str, args)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        },
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
