"""Sphinx configuration of the sorl-torchrl documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

from sphinx.ext import intersphinx
from sphinx.util.inspect import stringify_signature

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))

from _inventories import ALIASES, PROJECTS, write_inventories  # noqa: E402
from _recipe_tables import TABLES  # noqa: E402

import sorl_torchrl  # noqa: E402

# Tutorials train small networks: one thread each is fastest and avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# -- Project -------------------------------------------------------------------------------
project = "sorl-torchrl"
author = "sorl-torchrl developers"
copyright = "2025, sorl-torchrl developers"  # noqa: A001
release = sorl_torchrl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/*.md", "tutorials/*.ipynb", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# Every cross-reference must resolve: a broken one is a warning, and the build uses -W.
nitpicky = True
nitpick_ignore = [
    # Type aliases used in annotations, documented in prose where they are used.
    ("py:class", "NestedKey"),
    ("py:class", "tensordict.utils.NestedKey"),
    ("py:class", "tensordict._nestedkey.NestedKey"),
    ("py:class", "QAggregation"),
    ("py:class", "OptimizerFactory"),
    ("py:class", "tensordict.nn.probabilistic.InteractionType"),
    # matplotlib's Figure (a return annotation); no matplotlib inventory is bundled.
    ("py:class", "Figure"),
    # Optional names in napoleon "optional" type annotations.
    ("py:class", "optional"),
    # Inherited replay-buffer method named without its class in a docstring.
    ("py:meth", "sample"),
]

# -- Autodoc / autosummary / napoleon ------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# -- Intersphinx (offline tolerant) ---------------------------------------------------------
# The remote inventory is tried first; without network the local fallback written by
# ``_inventories.py`` is used. Sphinx only warns when *every* location of a project fails.
_local_inventories = write_inventories(DOCS / "_build" / "intersphinx")
intersphinx_mapping = {
    name: (url, (None, str(_local_inventories[name]))) for name, (url, _) in PROJECTS.items()
}
intersphinx_timeout = 5

# -- MyST ------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath", "attrs_inline"]
myst_heading_anchors = 3

# -- Sphinx-Gallery (tutorials) --------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "tutorials")],
    "gallery_dirs": ["tutorials"],
    "filename_pattern": r"/\d\d_",  # execute every numbered tutorial
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 0,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib", "seaborn"),
    "doc_module": ("sorl_torchrl",),
    "backreferences_dir": None,
    "capture_repr": ("_repr_html_", "__repr__"),
    "show_memory": False,
    "write_computation_times": True,
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"sorl-torchrl {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


# -- Benchmarks page: benchmarks/RESULTS.md ------------------------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _stage_benchmark_results() -> None:
    generated = DOCS / "_generated"
    generated.mkdir(exist_ok=True)
    results = ROOT / "benchmarks" / "RESULTS.md"
    summary = (
        results.read_text()
        if results.is_file()
        else "*No results are checked in yet: run the benchmarks as shown above.*\n"
    )
    _write_if_changed(generated / "benchmark_results.md", summary)


_stage_benchmark_results()


# -- Recipes page: tables of the config groups, rendered from sorl_torchrl/recipes/conf ----
def _stage_recipe_tables() -> None:
    generated = DOCS / "_generated"
    generated.mkdir(exist_ok=True)
    for name, render in TABLES.items():
        _write_if_changed(generated / name, render(ROOT / "sorl_torchrl" / "recipes" / "conf"))


_stage_recipe_tables()


# -- Cross-reference aliases -----------------------------------------------------------------
def _resolve_alias(app, env, node, contnode):
    """Resolve references that name an object by another path than its documented one.

    * external objects named by their defining module (``torchrl.objectives.common.LossModule``
      in a base-class list) are sent to intersphinx under their documented name;
    * a name of this package given by another path than its documented one (re-exported as
      ``sorl_torchrl.QEnsemble``, or by its defining module ``sorl_torchrl.data.specs.X``)
      or without its package (``QEnsemble``) resolves to the single documented object with
      that name. Names that match nothing, or more than one object, stay broken (and fail
      -W).
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    alias = ALIASES.get(target)
    if alias is not None:
        new = node.deepcopy()
        new["reftarget"] = alias
        found = intersphinx.missing_reference(app, env, new, contnode)
        if found is not None:
            return found
        target = alias
    domain = env.get_domain("py")
    parts = target.split(".")
    if len(parts) > 1 and parts[0] != "sorl_torchrl":
        return None
    suffix = "." + parts[-1]
    matches = {
        name
        for name, obj in domain.objects.items()
        if name.startswith("sorl_torchrl.") and name.endswith(suffix) and not obj.aliased
    }
    if len(matches) != 1:
        return None
    (full,) = matches
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
    )


def _check_no_private(app, what, name, obj, skip, options):
    # Never document private helpers, even when they carry a docstring, nor TorchRL's
    # ``default_keys`` alias of a loss's private key dataclass.
    short = name.rsplit(".", 1)[-1]
    if short == "default_keys":
        return True
    if short.startswith("_") and not (short.startswith("__") and short.endswith("__")):
        return True
    return None


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    # TensorDict modules and TorchRL losses have metaclasses whose ``__call__`` hides the
    # constructor's signature behind ``(*args, **kwargs)``: show ``__init__``'s instead.
    if what != "class" or signature not in (None, "(*args, **kwargs)"):
        return None
    init = getattr(obj, "__init__", None)
    if init is None or init is object.__init__:
        return None
    sig = inspect.signature(init)
    params = list(sig.parameters.values())[1:]  # drop self
    sig = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return stringify_signature(sig, show_annotation=False), return_annotation


def _undo_property_type_misparse(app, what, name, obj, options, lines):
    # napoleon reads a property docstring's first line "Text: more text" as "type: text".
    # A property with a return annotation has its type already: put the text back.
    if what != "property":
        return
    func = getattr(obj, "fget", obj)
    if inspect.signature(func).return_annotation is inspect.Signature.empty:
        return
    for i, line in enumerate(lines):
        if line.startswith(":type: "):
            misread = line[len(":type: ") :]
            del lines[i]
            if lines:
                lines[0] = f"{misread}: {lines[0]}"
            return


def setup(app):
    """Register the alias resolver after intersphinx's own resolver."""
    app.connect("missing-reference", _resolve_alias, priority=900)
    app.connect("autodoc-process-signature", _init_signature)
    app.connect("autodoc-process-docstring", _undo_property_type_misparse, priority=600)
    app.connect("autodoc-skip-member", _check_no_private)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
