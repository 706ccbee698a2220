"""The device side must run on Python 3.8 (JetPack 5): checked by vermin on every module, beside
the syntax and import checks in tests/device/."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "edgecompress" / "deploy"


@pytest.mark.skipif(shutil.which("vermin") is None and not Path(sys.executable).with_name("vermin").exists(),
                    reason="vermin is not installed (pip install -e '.[dev]')")
def test_device_side_needs_nothing_newer_than_python_3_8():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    out = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations", str(DEPLOY)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(list(DEPLOY.glob("*.py"))) >= 5  # the check saw the modules
