"""A researcher's own scorers, models and datasets, imported from outside the project (`--plugins`).

A plugin is a dotted module on the Python path (`my_lab.pruners`) or a `.py`
file (`~/code/my_scorer.py`). Importing it runs its `@scorer` / `@model` /
`@dataset` decorators, which register it beside the built-ins. The sweep
imports plugins on the driver (to check and plan the grid), ships them to every
Ray worker with Ray's runtime environment (`py_modules`), and each trial
imports them again by name before it reads its description.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, List


class PluginError(ValueError):
    """A plugin that cannot be found or fails to import: one line, exit code 2."""


@dataclass(frozen=True)
class Plugin:
    given: str          # as the user wrote it
    import_name: str    # what a worker imports (the file's stem for a .py path)
    shipped: ModuleType  # what Ray ships: the module, or the top-level package that holds it


def _is_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text


def _import(name: str, given: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise PluginError(f"cannot import plugin {given!r}: no module named {exc.name!r}; give a dotted module "
                              f"on the Python path or the path of a .py file") from None
        raise PluginError(f"plugin {given!r} failed to import: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # sys.exit() at import would end the sweep with status 0, having run nothing
        raise PluginError(f"plugin {given!r} called sys.exit({exc.code!r}) while importing; a plugin may only "
                          f"define and register its scorers, models and datasets") from None
    except Exception as exc:  # the plugin's own code raised: name it, not a traceback
        raise PluginError(f"plugin {given!r} failed to import: {type(exc).__name__}: {exc}") from None


def load_plugin(given: str) -> Plugin:
    text = given.strip()
    if not text:
        raise PluginError("empty --plugins value; give a dotted module or a .py path")
    if not _is_path(text):
        _import(text, given)
        return Plugin(given, text, sys.modules[text.split(".")[0]])
    path = Path(text).expanduser().resolve()
    if path.suffix != ".py" or not path.is_file():
        raise PluginError(f"plugin file {given!r} does not exist or is not a .py file")
    name = path.stem
    if not name.isidentifier():
        raise PluginError(f"plugin file {given!r}: {name!r} is not a valid module name")
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != path:
        raise PluginError(f"plugin file {given!r} is named like the already-imported module {name!r} "
                          f"({getattr(loaded, '__file__', 'built in')}); rename the file")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return Plugin(given, name, _import(name, given))


def load_plugins(given: Iterable[str]) -> List[Plugin]:
    return [load_plugin(g) for g in given]


def import_by_name(names: Iterable[str]) -> None:
    """On a worker: import the plugins the driver shipped (already on the path through `py_modules`)."""
    for name in names:
        _import(name, name)
