"""A regular (non-editable) install carries the configs and the sweeper plugin and works from any
folder: the wheel is built from a clean copy of the source, installed into a fresh venv outside the
source tree, and used from an unrelated folder for a short sweep and its aggregation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

#: Folders of the source whose every file the wheel must carry, and where they go in it.
SHIPPED = {"asymbp": "asymbp", "hydra_plugins": "hydra_plugins", "conf": "asymbp/conf"}
#: Never part of a source copy (what a clone of the repository does not hold).
GENERATED = ("__pycache__", "*.pyc", ".venv", ".git", "build", "dist", "*.egg-info", "outputs")


def source_files() -> list[Path]:
    """The source as a fresh clone holds it: git's tracked and not-ignored files (relative)."""
    if shutil.which("git") and (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [Path(p) for p in listed.split("\0") if p and (REPO / p).is_file()]
    ignore = shutil.ignore_patterns(*GENERATED)
    files = []
    for folder, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in ignore(folder, dirs)]
        files += [
            Path(folder, n).relative_to(REPO) for n in names if n not in ignore(folder, names)
        ]
    return files


def run(args, cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline (no build isolation) from a copy of the source tree."""
    source = tmp_path_factory.mktemp("source")
    for relative in source_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, source / relative)
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*pip_wheel, "--no-index", "-w", dist, source], cwd=source)
    (built,) = dist.glob("asymbp-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable). Its dependencies (torch, Hydra, ...)
    come from this venv's site-packages, named by a .pth file: a plain path entry, so the .pth
    files there (among them the editable install of the source) are not run."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv
    ).strip()
    Path(purelib, "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip_install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
    run([*pip_install, "--no-index", wheel], cwd=venv)
    return venv


def clean_env(venv: Path) -> dict:
    """The environment of a user of that venv: no PYTHONPATH, its bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_carries_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{SHIPPED[f.parts[0]]}/{Path(*f.parts[1:]).as_posix()}"
        for f in source_files()
        if f.parts[0] in SHIPPED
    }
    assert {"asymbp/conf/train.yaml", "asymbp/conf/dataset/digits.yaml"} <= expected
    assert "hydra_plugins/asymbp_sweeper/arms_sweeper.py" in expected
    assert expected - names == set()


@pytest.mark.slow
def test_installed_wheel_trains_sweeps_and_aggregates_from_an_unrelated_folder(venv, tmp_path):
    env = clean_env(venv)
    where = run(
        [venv / "bin" / "python", "-c",
         "import asymbp, asymbp.config; print(asymbp.__file__); print(asymbp.config.CONFIG_DIR)"],
        cwd=tmp_path, env=env,
    ).split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the installed copy
    assert Path(where[1]).name == "conf" and (Path(where[1]) / "train.yaml").is_file()

    # A sweep (the asymbp sweeper plugin from the wheel composes it) of two short runs.
    run(
        ["asymbp-train", "-m", "seed=0,1", "epochs=1", "model=mlp", "model.hidden=[16]",
         "progress=false", "threads=1", "exp_name=wheel"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    done = sorted(p.parent.name for p in (tmp_path / "outputs" / "wheel").glob("*/DONE"))
    assert [name.split("_s")[-1][:1] for name in done] == ["0", "1"], done
    run(["asymbp-aggregate", "outputs/wheel", "--out", "report", "--no-figures"], tmp_path, env)
    table = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert list(table["status"]) == ["done", "done"]
    assert set(table["dataset"]) == {"digits"} and set(table["model"]) == {"mlp"}


@pytest.mark.slow
def test_reproduce_paper_composes_with_the_installed_configs(venv, tmp_path):
    """scripts/reproduce_paper.py run with the installed asymbp, from another folder."""
    code = (
        "import sys; sys.argv = ['reproduce_paper']; "
        f"sys.path.insert(0, {str(REPO / 'scripts')!r}); "
        "import reproduce_paper, asymbp.config; "
        "assert reproduce_paper.CONFIG_DIR == asymbp.config.CONFIG_DIR; "
        "print(reproduce_paper.CONFIG_DIR); "
        "print(reproduce_paper.dataset_overrides('digits', None))"
    )
    lines = run([venv / "bin" / "python", "-c", code], tmp_path, clean_env(venv)).splitlines()
    assert Path(lines[-2]).is_relative_to(venv)
    assert lines[-1] == "[]"  # digits composed and loaded, no extra overrides needed
