"""The package description: README.md with its relative links made absolute, at the release tag.

PyPI shows the description without the repository around it, so a link such as
`notebooks/01_attention.ipynb` would lead nowhere; tools/repository.py rewrites each one to the
file on GitHub at the tag "v" + version. Everything else about the package is in pyproject.toml.
"""

import pathlib
import sys

from setuptools import setup

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from repository import absolute_links  # noqa: E402

setup(
    long_description=absolute_links((ROOT / "README.md").read_text(encoding="utf-8")),
    long_description_content_type="text/markdown",
)
