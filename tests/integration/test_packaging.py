"""A plain wheel holds the same import package as the editable install: ``dawait`` from
``sdk/``, ``dawait.runtime`` from ``runtime/``, ``dawait.cluster`` from ``cluster/``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_dawait_with_its_subpackages(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("dawait-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "dawait/__init__.py",
        "dawait/errors.py",
        "dawait/testing.py",
        "dawait/py.typed",
        "dawait/runtime/__init__.py",
        "dawait/runtime/_engine.py",
        "dawait/runtime/_sqlite_store.py",
        "dawait/cluster/__init__.py",
    ):
        assert module in names
    assert not any(name.startswith(("sdk/", "runtime/", "tests/", "bench/")) for name in names)

    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    probe = "import dawait, dawait.runtime, dawait.cluster; print(dawait.__file__)"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip().startswith(str(target))
