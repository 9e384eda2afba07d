"""Package attributes imported on first use, so that importing a package stays cheap (standard library only)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, table: dict[str, str], own: dict):
    """``(__getattr__, __dir__)`` for a package whose names in ``table`` (name -> relative module) are imported
    from their module on first access; ``own`` is the package's ``globals()``."""

    def __getattr__(name):
        if name in table:
            return getattr(importlib.import_module(table[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(list(own) + list(table))

    return __getattr__, __dir__
