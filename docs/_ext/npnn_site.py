"""Small pieces that keep docs/*.md readable both on the site and as plain Markdown.

* A Markdown link to a source file, ``[npnn/functional/lstm.py](../npnn/functional/lstm.py)``,
  works in a repository browser; on the site it opens the highlighted source page
  that ``sphinx.ext.viewcode`` writes for that module (``_modules/npnn/functional/lstm.html``)
  instead of downloading the file.
* A displayed equation with its docstring's number, ``$$ ... \\tag{8} $$``, may span
  lines (``\\\\``): Sphinx would wrap those in ``split``, where MathJax refuses a
  ``\\tag``, so such an equation is given to MathJax as ``equation`` + ``aligned``.
* Each executed notebook's run time goes to ``notebook_times.json`` in the build; one
  over ``npnn_notebook_budget`` seconds (conf.py) fails a strict build.
* ``{tutorial-list}`` lists the tutorial notebooks under their own titles (the Chinese
  tutorial index uses it).
"""

import json
import os
import re
from typing import Any, Dict

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

_TAG = re.compile(r"\\tag\*?\{[^}]*\}")


def _source_links(app: Any, doctree: nodes.document, docname: str) -> None:
    root = os.path.dirname(os.path.abspath(app.srcdir))
    for node in list(doctree.findall(addnodes.download_reference)):
        target = os.path.normpath(os.path.join(app.srcdir, os.path.dirname(docname),
                                               node.get("reftarget", "")))
        rel = os.path.relpath(target, root)
        if not (rel.startswith("npnn" + os.sep) and rel.endswith(".py")):
            continue
        module = rel[:-3].replace(os.sep, ".")
        module = module[:-len(".__init__")] if module.endswith(".__init__") else module
        page = "_modules/" + module.replace(".", "/")
        if not os.path.exists(os.path.join(app.outdir, page + ".html")) and \
                module not in getattr(app.env, "_viewcode_modules", {}):
            continue
        uri = app.builder.get_relative_uri(docname, page)
        node.replace_self(nodes.reference("", "", *node.children, refuri=uri, internal=True))


def _tagged_multiline_math(app: Any, doctree: nodes.document, docname: str) -> None:
    for node in doctree.findall(nodes.math_block):
        text = node.astext()
        tags = _TAG.findall(text)
        if node.get("nowrap") or len(tags) != 1 or "\\\\" not in text or "\n\n" in text.strip():
            continue
        body = _TAG.sub("", text).strip()
        node["nowrap"] = True
        node.children = [nodes.Text(
            "\\begin{equation}\\begin{aligned}" + body + "\\end{aligned}" + tags[0]
            + "\\end{equation}")]


def _notebook_times(app: Any, exception: Any) -> None:
    """Each executed notebook's run time, written to ``notebook_times.json`` in the
    build and printed; one over ``npnn_notebook_budget`` seconds is a warning, which
    fails a strict build (the tutorials must each run in 2 minutes on 2 cores)."""
    if exception is not None:
        return
    try:
        from myst_nb.sphinx_ import NbMetadataCollector
    except ImportError:
        return
    times = {}
    for docname, data in sorted(NbMetadataCollector.get_doc_data(app.env).items()):
        runtime = (data.get("exec_data") or {}).get("runtime")
        if runtime is not None:
            times[docname] = round(float(runtime), 1)
    with open(os.path.join(app.outdir, "notebook_times.json"), "w", encoding="utf-8") as f:
        json.dump(times, f, indent=1)
    budget = app.config.npnn_notebook_budget
    for docname, runtime in times.items():
        logger.info(f"notebook {docname}: executed in {runtime:.1f} s")
        if runtime > budget:
            logger.warning(f"notebook {docname} ran {runtime:.0f} s, over its budget of "
                           f"{budget} s", location=docname)


class TutorialList(SphinxDirective):
    """``{tutorial-list}``: a list of links to every page in ``tutorials/`` but its
    index, in file order, each under its own title; read anew at every build, so a
    page that lists the tutorials in another language never goes stale."""

    def run(self) -> list:
        self.env.note_reread()
        items = nodes.bullet_list()
        for docname in sorted(d for d in self.env.found_docs
                              if d.startswith("tutorials/") and d != "tutorials/index"):
            ref = addnodes.pending_xref("", nodes.inline("", docname), refdomain="std",
                                        reftype="doc", reftarget="/" + docname,
                                        refexplicit=False, refwarn=True,
                                        refdoc=self.env.docname)
            items += nodes.list_item("", nodes.paragraph("", "", ref))
        return [items]


def setup(app: Any) -> Dict[str, Any]:
    app.connect("doctree-resolved", _source_links)
    app.connect("doctree-resolved", _tagged_multiline_math)
    app.add_directive("tutorial-list", TutorialList)
    app.add_config_value("npnn_notebook_budget", 120, "env")
    app.connect("build-finished", _notebook_times)
    return {"parallel_read_safe": True, "version": "1"}
