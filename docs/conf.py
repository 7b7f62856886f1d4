"""Sphinx configuration for ngxffi's documentation (``make docs``).

The guides are Markdown (MyST); the API reference is autodoc over the docstrings,
which are reST. The build runs with ``-W --keep-going``: any warning fails it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sphinx.util import logging

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # import the package from this tree

from ngxffi import __version__  # noqa: E402

project = "ngxffi"
author = "ngxffi developers"
copyright = "ngxffi developers"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: ```{directive}``` fences and :::{note} blocks; anchors for "page.md#section"
# links between guides (the same links work on GitHub).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: members in source order (each module reads top down, as nginx's files do),
# type hints in the description so that long signatures stay readable. Every
# automodule says :members: itself: the top-level package must not, or the names it
# re-exports would be described twice.
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "furo"
html_title = f"ngxffi {release}"


# The API reference lists its modules by hand, by layer (docs/api/*.rst), so that each
# page reads bottom up. A module of the package that no page lists is a warning (and
# so fails the build): a new module needs its automodule entry.
NOT_IN_REFERENCE = {
    "ngxffi.__main__",  # runs the command when imported
    "ngxffi._version",  # __version__ only
}


def _check_reference_covers_package(app: Any) -> None:
    package = ROOT / "ngxffi"
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
    }
    listed = {
        name
        for page in (Path(app.srcdir) / "api").iterdir()
        if page.suffix in (".rst", ".md")
        for name in re.findall(r"automodule::\s+([\w.]+)", page.read_text())
    }
    for name in sorted(modules - listed - NOT_IN_REFERENCE):
        logging.getLogger(__name__).warning(
            "module %s is in no page of docs/api/: add an automodule entry for it",
            name,
        )


def setup(app: Any) -> None:
    app.connect("builder-inited", _check_reference_covers_package)
