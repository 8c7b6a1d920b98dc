"""``./scripts/run.sh`` installs what the node needs and only when something changed:

* it runs ``pip install -e .`` (the runtime dependencies, not the [dev] extras) into a venv
  with no install stamp, then not again while the stamp matches pyproject.toml and the
  venv's Python; a changed pyproject.toml installs again; a [dev] install recorded by
  ``scripts/check.sh`` (which holds everything the node needs) counts as installed;
* ``scripts/check.sh`` keys its stamp the same way, and installs [dev] over run.sh's stamp;
* nothing the node or the example app imports comes only from the [dev] extras: every
  third-party import is a runtime dependency, or one of theirs.

The script runs for real, against a stand-in .venv whose python logs its pip calls.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".venv/.dawait-install-stamp"


def _project(tmp_path: Path) -> Path:
    """A copy of run.sh and pyproject.toml beside a .venv whose python logs what it is asked
    to do (``-c`` it runs for real, for the version) and whose dawait echoes its args."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
        f'echo "$*" >>{tmp_path / "pip.log"}\n'
    )
    (bin_ / "dawait").write_text('#!/usr/bin/env bash\necho "dawait $*"\n')
    for script in (bin_ / "python", bin_ / "dawait"):
        script.chmod(0o755)
    return tmp_path


def _run(project: Path) -> tuple[str, list[str]]:
    out = subprocess.run(
        [str(project / "scripts" / "run.sh"), "--port", "0"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": "false"},  # a missing .venv would fail: none is made
        timeout=60,
    ).stdout
    log = project / "pip.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return out, calls


def test_run_installs_the_runtime_once_and_again_when_pyproject_changes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    out, calls = _run(project)
    assert calls == ["-m pip install --quiet -e ."]  # no [dev]
    assert out == "dawait serve --app examples.app:app --port 0\n"
    stamp = (project / STAMP).read_text()
    assert stamp.startswith(f"runtime {sys.version.split()[0]} ")

    assert _run(project) == (out, [])  # a restart installs nothing

    with (project / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    assert _run(project)[1] == ["-m pip install --quiet -e ."]
    assert (project / STAMP).read_text() != stamp
    assert _run(project)[1] == []


def test_run_takes_a_dev_install_as_installed(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _run(project)
    key = (project / STAMP).read_text().removeprefix("runtime ")
    (project / STAMP).write_text(f"dev {key}")  # what check.sh writes after '.[dev]'
    assert _run(project)[1] == []
    assert (project / STAMP).read_text() == f"dev {key}"  # check.sh need not reinstall


def test_check_keys_its_stamp_as_run_does_and_installs_dev_over_a_runtime_stamp() -> None:
    def key_line(script: str) -> str:
        text = (ROOT / "scripts" / script).read_text()
        (line,) = [line for line in text.splitlines() if line.startswith("key=")]
        return line

    assert key_line("check.sh") == key_line("run.sh")
    check = (ROOT / "scripts" / "check.sh").read_text()
    assert f"STAMP={STAMP}\n" in check
    assert '!= "dev $key"' in check
    assert 'echo "dev $key" >"$STAMP"' in check
    assert "pip install --quiet -e '.[dev]'" in check


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for folder in ("sdk", "core", "runtime", "cluster", "node", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dawait", "examples"}


def _runtime_closure() -> set[str]:
    """The distributions `pip install .` brings in: dawait's requirements outside any
    extra, and theirs (with the extras they ask for), as installed here."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [("dawait", frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        for text in md.requires(name) or []:
            req = Requirement(text)
            wanted = not req.marker or any(
                req.marker.evaluate({"extra": extra}) for extra in ("", *extras)
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def test_the_node_imports_nothing_that_only_the_dev_extras_install() -> None:
    closure = _runtime_closure()
    providers = md.packages_distributions()
    outside = {
        name: providers.get(name, ["?"])
        for name in _third_party_imports()
        if not any(canonicalize_name(dist) in closure for dist in providers.get(name, []))
    }
    assert not outside, f"imported, but not a runtime dependency: {outside}"
