"""Sphinx configuration of npnn's documentation site.

Build (strict, as CI does):  python -m sphinx -W --keep-going -b html docs docs/_build/html
Install what it needs:        pip install -e ".[docs]"

The site works offline: the theme (furo) uses the system's fonts, MathJax is copied
from the ``sphinx-mathjax-offline`` package into the site, and nothing on any page is
fetched from another host (tests/test_docs_site.py checks this in Chromium).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)                     # the checkout's npnn, not an installed one
sys.path.insert(0, os.path.join(HERE, "_ext"))
# the tutorials' kernels import this npnn too, wherever the build runs from
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
# the notebooks' figures: Jupyter's inline backend, whatever the calling shell chose
# (an MPLBACKEND=Agg there would make plt.show() draw nothing into the pages)
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
# one BLAS thread unless the environment says otherwise: on a shared 2-core machine idle
# OpenBLAS threads spinning against other processes made a notebook several times slower
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import npnn  # noqa: E402

project = "npnn"
author = "The npnn authors"
copyright = "the npnn authors, MIT licence"
release = version = npnn.__version__

extensions = [
    "myst_nb",                       # Markdown pages and MyST notebooks, executed
    "sphinx.ext.autodoc",            # the API reference, from the docstrings
    "sphinx.ext.viewcode",           # each entry links to its source lines
    "sphinx-mathjax-offline",        # MathJax 3 served from the site itself
    "matplotlib.sphinxext.plot_directive",   # figures drawn by code at build time
    "npnn_api",                      # docs/_ext: one API page per public module
    "npnn_site",                     # docs/_ext: source links, numbered multi-line maths
]

# Markdown (MyST): $...$ and $$...$$ math, ::: fences, heading anchors for links
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# the notebooks (MyST markdown, jupytext's md:myst) run on every build
nb_execution_mode = "force"
nb_execution_timeout = 120          # seconds a cell
npnn_notebook_budget = 120          # seconds a notebook, all cells: more is a warning
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_custom_formats = {}

# the API reference
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_mock_imports = ["cupy", "cupyx", "mpi4py"]
viewcode_line_numbers = True

# figures drawn at build time (docs/figures/*.py)
plot_include_source = False
plot_html_show_source_link = True
plot_html_show_formats = False
plot_formats = [("png", 110)]

html_theme = "furo"
html_title = f"npnn {release}"
html_static_path = ["_static"]
html_css_files = ["npnn.css"]
html_theme_options = {"navigation_with_keys": True}
html_last_updated_fmt = None
html_copy_source = False

exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "jupyter_execute"]
language = "en"
