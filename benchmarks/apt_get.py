"""The Debian packages the benchmarks install for themselves (root only)."""

from __future__ import annotations

import os
import subprocess


def install(packages: list[str]) -> bool:
    """``apt-get install`` the packages, with an ``apt-get update`` first only when
    that fails (a fresh machine's package lists can be stale or missing); whether
    they are installed. Anyone but root gets False without a try."""
    if os.geteuid() != 0:
        return False
    command = ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(command, capture_output=True).returncode == 0:
        return True
    subprocess.run(["apt-get", "update", "-q"], capture_output=True)
    return subprocess.run(command, capture_output=True).returncode == 0
