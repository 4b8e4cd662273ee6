"""The built wheel, installed where the source tree cannot be imported, trains and backtests.

Why: an editable install (what `make` does) imports the checkout itself, so a package or a
config folder the wheel leaves out goes unnoticed until a cluster worker or a user's
``pip install`` dies on import. Here the wheel is built from a clean export of the tree
(tracked and new files, nothing ignored), installed with ``pip install --no-deps --target``
(the venv's dependencies are reused: no second install), and run from an empty directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY

pytestmark = pytest.mark.slow


def export_tree(dst: Path) -> Path:
    """The files a clean clone would hold (git's view of the work tree, ignored files left out)."""
    if shutil.which("git") and (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode().split("\0")  # fmt: skip
        for name in filter(None, listed):
            if (REPO / name).is_file():  # a deleted, not yet committed file is listed too
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dst / name)
    else:  # an unpacked source archive
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return dst


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = export_tree(tmp / "src")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    wheels = tmp / "whl"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("hmarl-*.whl")
    site = tmp / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600
    )
    return site


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in ``cwd`` with the installed wheel first on the path."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PYTHONPATH": str(site),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_wheel_ships_every_package_and_the_configs(installed: Path, tmp_path: Path) -> None:
    packages = sorted(
        str(p.parent.relative_to(REPO))
        for root in ("hmarl", "hydra_plugins")  # the launchers Hydra finds only under the latter
        for p in (REPO / root).rglob("__init__.py")
    )
    assert "hydra_plugins/hmarl_launchers" in packages
    missing = [p for p in packages if not (installed / p / "__init__.py").is_file()]
    assert missing == []
    yamls = sorted(p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml"))
    assert yamls and all((installed / "hmarl" / "conf" / y).is_file() for y in yamls)
    probe = run(
        installed, tmp_path, "-c",
        "import hmarl, hmarl.config as c, hmarl.app.__main__ as a; "
        "print(hmarl.__file__); print(c.conf_dir()); print(a.PAGE.is_file())",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    module_file, conf, page = probe.stdout.split()
    assert module_file.startswith(str(installed)), "the test must import the installed copy"
    assert Path(conf) == installed / "hmarl" / "conf" and page == "True"


def test_train_then_backtest_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    train = run(
        installed, work, "-m", "hmarl.train", *TINY, "trainer.episodes=2", "tracking=none",
        "device=cpu", "hydra.run.dir=run",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    last = work / "run" / "checkpoints" / "last.pt"
    assert last.is_file() and (work / ".hmarl_cache").is_dir()
    backtest = run(
        installed, work, "-m", "hmarl.backtest", f"checkpoint={last}", "tracking=none",
        "plots=false", "n_bootstrap=50", "hydra.run.dir=bt",
    )  # fmt: skip
    assert backtest.returncode == 0, backtest.stderr[-3000:]
    assert (work / "bt" / "stats.json").is_file()
    app = run(installed, work, "-c", "import hmarl.app, hmarl.app.backend")
    assert app.returncode == 0, app.stderr[-3000:]
