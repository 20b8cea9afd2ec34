"""The examples run, and the README's Python section is quickstart.py verbatim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "model/weight: f32 (4, 4), first value 0.0" in out.stdout


def test_the_readme_shows_quickstart_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- quickstart.py:begin -->\n```python\n", "```\n<!-- quickstart.py:end -->"
    assert begin in readme and end in readme
    shown = readme.split(begin, 1)[1].split(end, 1)[0]
    assert shown == (ROOT / "examples" / "quickstart.py").read_text()
