"""Tiny helper to write notebooks from (kind, source) lists, without outputs.

Used while authoring: ``python tools/nbbuild.py`` is not needed at run time; notebooks are committed.
"""

from __future__ import annotations

import nbformat


def build(cells, path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src, *tags in cells:
        if kind == "md":
            c = nbformat.v4.new_markdown_cell(src.strip("\n"))
        else:
            c = nbformat.v4.new_code_cell(src.strip("\n"))
        if tags:
            c.metadata["tags"] = list(tags)
        nb.cells.append(c)
    for i, c in enumerate(nb.cells):
        c.id = f"c{i:02d}"
    nbformat.write(nb, path)
