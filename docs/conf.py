"""Sphinx configuration of the sorl-torchrl documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``).
"""

from __future__ import annotations

import importlib
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
    # OmegaConf's config type (a parameter annotation); OmegaConf publishes no API inventory.
    ("py:class", "omegaconf.dictconfig.DictConfig"),
    # Optional names in napoleon "optional" type annotations.
    ("py:class", "optional"),
    # NumPy arrays in annotations (``frames: Tensor | ndarray``); no NumPy inventory is bundled.
    ("py:class", "numpy.ndarray"),
    # Inherited replay-buffer method named without its class in a docstring.
    ("py:meth", "sample"),
]
# Private base classes (``_Policy``, ``_ActorModule``) named by show-inheritance: never
# documented (see ``_check_no_private``); their public members are.
nitpick_ignore_regex = [("py:class", r"sorl_torchrl(\.\w+)*\._[A-Za-z]\w*")]

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
def _import_object(path: str):
    """The object named by a dotted path (a module, then attributes), or ``None``."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        return obj
    return None


def _documented(domain, suffix: str) -> set[str]:
    """The documented names of this package that end with ``suffix``."""
    return {
        name
        for name, obj in domain.objects.items()
        if name.startswith("sorl_torchrl.") and name.endswith(suffix) and not obj.aliased
    }


def _resolve_member(app, env, node, contnode, target: str):
    """Resolve ``Class.member`` (or ``member`` inside a class's docstring) through the MRO.

    A member is documented on the class that defines it, so a reference to an inherited one
    (``VerifierSampler.compile_select``, ``read_batch`` in a baseline loss's docstring) goes
    to the defining class's entry. A member of a private base (never documented) links to
    the documented class itself.
    """
    domain = env.get_domain("py")
    owner_path, _, member = target.rpartition(".")
    if not owner_path:
        context = node.get("py:class")
        if not context:
            return None
        owner_path = f"{node.get('py:module') or 'sorl_torchrl'}.{context}"
    if not member or not owner_path.startswith("sorl_torchrl"):
        return None
    owner = _import_object(owner_path)
    if not inspect.isclass(owner):
        return None
    for cls in owner.__mro__:
        if member in vars(cls):
            found = _documented(domain, f".{cls.__name__}.{member}")
            if len(found) == 1:
                (full,) = found
                return domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
                )
            break
    found = _documented(domain, f".{owner.__name__}")
    found = {name for name in found if domain.objects[name].objtype in ("class", "exception")}
    if len(found) != 1:
        return None
    (full,) = found
    return domain.resolve_xref(env, node["refdoc"], app.builder, "class", full, node, contnode)


def _resolve_alias(app, env, node, contnode):
    """Resolve references that name an object by another path than its documented one.

    * external objects named by their defining module (``torchrl.objectives.common.LossModule``
      in a base-class list) are sent to intersphinx under their documented name;
    * a name of this package given by another path than its documented one (re-exported as
      ``sorl_torchrl.QEnsemble``, or by its defining module ``sorl_torchrl.data.specs.X``)
      or without its package (``QEnsemble``, ``GaussianPolicy.log_prob``) resolves to the
      single documented object with that name;
    * a member named through a class that inherits it (``VerifierSampler.compile_select``,
      or ``read_batch`` in a subclass's docstring) resolves to the defining class's entry
      (:func:`_resolve_member`).

    Names that match nothing, or more than one object, stay broken (and fail -W).
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
        # ``Class.member`` without its package: the single documented object of this
        # package with that tail (``GaussianPolicy.log_prob``), else broken.
        matches = _documented(domain, "." + target)
        if len(matches) != 1:
            return None
        (full,) = matches
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], full, node, contnode
        )
    suffix = "." + parts[-1]
    matches = {
        name
        for name, obj in domain.objects.items()
        if name.startswith("sorl_torchrl.") and name.endswith(suffix) and not obj.aliased
    }
    if len(matches) != 1:
        if node.get("reftype") in ("meth", "attr", "data", "obj"):
            return _resolve_member(app, env, node, contnode, target)
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
    # napoleon reads a property's or attribute's docstring's first line "Text: more text"
    # as "type: text". A property with a return annotation has its type already, and an
    # attribute's "type" of several plain words is prose: put the text back.
    if what in ("attribute", "data"):
        for i, line in enumerate(lines):
            if line.startswith(":type: "):
                misread = line[len(":type: ") :]
                if len(misread.split()) > 2 and not any(c in misread for c in "[|`"):
                    del lines[i]
                    if lines:
                        lines[0] = f"{misread}: {lines[0]}"
                return
        return
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
