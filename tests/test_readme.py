"""The README's first code block runs as written, in a fresh directory."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block() -> str:
    match = re.search(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert match is not None, "README.md has no python code block"
    return match.group(1)


def test_readme_first_code_block_runs(tmp_path):
    code = _first_python_block()
    assert "for _ in range(" in code  # a bounded loop, not `for batch in replay_buffer`
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"loss_actor -?\d+\.\d+, steps \d+", proc.stdout), proc.stdout
    assert (tmp_path / "data" / "readme" / "cube-single-play-v0.npz").exists()
