"""Sphinx configuration of the course's website; build it with `python tools/build_site.py`.

The sources are staged by that tool (the README as the front page, copies of the notebooks
with their stored outputs); nothing is executed, and nothing is fetched from a network.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from repository import release_ref, repository_url  # noqa: E402

project = "Perceiver Resampler: a notebook course"
author = "the Perceiver Resampler course authors"
copyright = "2026, " + author

extensions = [
    "myst_nb",  # Markdown and notebooks, with their stored outputs
    "sphinx-mathjax-offline",  # MathJax served from the site's own _static/mathjax
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # README links such as (#tolerances) resolve to the section
nb_execution_mode = "off"  # the committed outputs are the pages' outputs
nb_merge_streams = True
nb_code_prompt_show = "Show the worked solution"  # the only cells folded with "hide-input" are solutions
nb_code_prompt_hide = "Hide the worked solution"

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "repository_url": repository_url(),
    "repository_branch": release_ref(),  # a tag, not a moving branch
    "path_to_docs": "",  # the staged sources mirror the repository: notebooks/NN_name.ipynb
    "use_repository_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
}
html_show_sourcelink = False
