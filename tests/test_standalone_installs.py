"""Every integration package installs and imports on its own (issue: "install only the
components you use").

Each package is installed into a fresh virtual environment that holds the core (installed
from this clone) and the third-party packages of the running environment, but none of the
other integration packages. The installs run with ``--no-index``: pip must find every
requirement the package declares among the installed packages, so a requirement on a sibling
package (which is on no index) fails here just as it fails for a user ("No matching
distribution found"). Then the package is imported and its siblings are checked absent.

The third-party packages are shared with the running environment through a folder of
symbolic links (everything in its ``site-packages`` except this project's packages and their
editable-install hooks), added to the fresh environment by a ``.pth`` file: no download, a few
seconds per package. Needs ``hatchling`` (dev extra) for ``--no-build-isolation``.
"""

from __future__ import annotations

import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from _integration_packages import PACKAGES, ROOT  # noqa: E402

ALL_MODULES = [module for _, module, _ in PACKAGES]

pytestmark = pytest.mark.slow


def _is_project_entry(name: str) -> bool:
    """This project's packages and editable-install hooks (left out of the shared folder)."""
    lowered = name.lower()
    return "metaembed" in lowered or lowered.startswith(("__editable__", "_editable_impl_"))


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to the running environment's third-party packages."""
    pytest.importorskip("hatchling", reason="needs hatchling (dev extra) to build offline")
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path_factory.mktemp("shared-site")
    for entry in site.iterdir():
        if not _is_project_entry(entry.name) and entry.suffix != ".pth":
            (farm / entry.name).symlink_to(entry)
    return farm


def _fresh_env(where: Path, shared: Path) -> Path:
    """A new virtual environment seeing ``shared`` and the core (from this clone); returns
    its python."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "shared_site.pth").write_text(str(shared) + "\n")
    _pip(python, "-e", str(ROOT))
    return python


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"pip install {' '.join(args)} failed:\n{result.stderr[-4000:]}"


@pytest.mark.parametrize(
    ("folder", "module", "name"), PACKAGES, ids=lambda v: getattr(v, "name", "")
)
def test_package_installs_and_imports_alone(
    folder: Path, module: str, name: str, shared_site: Path, tmp_path: Path
) -> None:
    python = _fresh_env(tmp_path / "venv", shared_site)
    _pip(python, "-e", str(folder))
    others = [m for m in ALL_MODULES if m != module]
    script = (
        "import importlib, importlib.util, sys\n"
        f"mod = importlib.import_module({module!r})\n"
        f"assert hasattr(mod, {name!r}), dir(mod)\n"
        "def found(name):\n"
        "    try:\n"
        "        return importlib.util.find_spec(name) is not None\n"
        "    except ModuleNotFoundError:\n"
        "        return False\n"
        f"present = [m for m in {others!r} if found(m)]\n"
        "assert not present, f'sibling packages visible: {present}'\n"
        "print('ok', mod.__file__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": str(python.parent), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert str(folder) in result.stdout, result.stdout  # imported from the package, not elsewhere
