"""Objects named by import path in the config (``package.module:Name``): an L1 family of your own.

The simulator's own choices are names (``simple``, ``dhen``); anything else given where a plugin
may go is an import path, imported when the config is validated so that a typo stops the run
before it starts, with the key named.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def load_object(path: str, key: str) -> Any:
    """The object ``path`` (``package.module:Name``, ``Name`` may be dotted) names; raises
    ``ValueError`` naming ``key`` when the path is malformed, its module cannot be imported, or
    it has no such name."""
    if not PATH.match(path):
        raise ValueError(f"`{key}` {path!r} is not an import path 'package.module:Name'")
    module_name, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"`{key}` {path!r}: cannot import module {module_name!r} ({exc})") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"`{key}` {path!r}: module {module_name!r} has no {name!r}")
        obj = getattr(obj, part)
    return obj
