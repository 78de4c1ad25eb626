"""Every package folder is installed, and nothing installs as a bare top-level name."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found <= declared, found - declared
    assert all(p == "dtqs" or p.startswith("dtqs.") for p in declared)


def test_lua_scripts_ship_as_package_data():
    import importlib.resources

    lua = importlib.resources.files("dtqs.runtime.redis").joinpath("lua")
    names = {p.name for p in lua.iterdir()}
    assert {"enqueue.lua", "fetch.lua", "finish.lua", "_lib.lua"} <= names
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "lua/*.lua" in config["package-data"]["dtqs.runtime.redis"]
