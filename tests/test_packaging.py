"""environment.yml and pyproject.toml must describe the same environment."""

import re
import tomllib

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
