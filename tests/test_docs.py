"""docs/capabilities.md must match what the drivers declare and the tests exercise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_capabilities_doc_is_generated_and_current():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_capabilities.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
