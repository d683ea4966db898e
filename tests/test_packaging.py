"""environment.yml and pyproject.toml must describe the same environment."""

import re
import tomllib
from pathlib import Path

from tests.conftest import REPO


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _environment_lines():
    return [l.strip() for l in (REPO / "environment.yml").read_text().splitlines() if l.strip() and not l.strip().startswith("#")]


def test_python_version_agrees():
    req = _pyproject()["project"]["requires-python"]
    env = " ".join(_environment_lines())
    assert req == ">=3.11"
    assert "python>=3.11" in env


def test_environment_installs_the_package_with_its_extras():
    extras = set(_pyproject()["project"]["optional-dependencies"])
    lines = _environment_lines()
    install = [l for l in lines if re.match(r"- -e \.\[", l)]
    assert len(install) == 1, lines
    asked = set(re.search(r"\[(.*)\]", install[0]).group(1).split(","))
    assert asked == extras


def test_every_pinned_package_in_environment_is_in_pyproject():
    deps = _pyproject()["project"]["dependencies"]
    names = {re.split(r"[<>=!\[ ]", d)[0].lower(): d for d in deps}
    for line in _environment_lines():
        m = re.match(r"- ([A-Za-z0-9_.-]+)\s*([<>=].*)?$", line)
        if not m or m.group(1) in ("pip", "python", "conda-forge", "defaults"):
            continue
        name, spec = m.group(1).lower(), (m.group(2) or "").strip()
        assert name in names, f"{name} is in environment.yml but not in pyproject.toml"
        assert spec in names[name], f"{name}: environment.yml says {spec!r}, pyproject {names[name]!r}"


def test_console_script_and_module_entry_points():
    assert _pyproject()["project"]["scripts"]["mini-llm"] == "mini_llm.cli:main"
    assert (REPO / "mini_llm" / "__main__.py").exists()


def test_a_wheel_ships_every_room_and_the_command(tmp_path):
    """Build a wheel from the checkout and install it (not editable) into a fresh venv that borrows
    this environment's dependencies: every subpackage imports from the install, and the installed
    `mini-llm --help` runs."""
    import subprocess
    import sys
    import sysconfig
    import venv

    import shutil

    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a clean copy: no build/ left from earlier builds
    shutil.copytree(REPO / "mini_llm", source / "mini_llm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (torch, tokenizers, ...) come from this environment; its editable mini_llm is
    # not seen there: the .pth files of a path listed in a .pth file are not run
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("mini_llm-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    rooms = ["mini_llm.train", "mini_llm.cli", "mini_llm.bench", "mini_llm.course", "mini_llm.course.checks",
             "mini_llm.checks", "mini_llm.widgets"]
    code = f"import importlib, mini_llm; [importlib.import_module(m) for m in {rooms!r}]; print(mini_llm.__file__)"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.stdout.strip().startswith(site), out.stdout  # the installed copy, not the checkout
    help_text = subprocess.run([str(bin_dir / "mini-llm"), "--help"], check=True, capture_output=True, text=True,
                               cwd=tmp_path, timeout=300).stdout
    assert "mini-llm train" in help_text and "mini-llm bench WHAT" in help_text
