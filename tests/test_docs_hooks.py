"""docs/hooks.md documents every hook specification, and each specification follows the docstring template."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import FunctionType

import pytest

from trackpoint.plugins import hookspecs

HOOKS_MD = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
BANNER = re.compile(r"^# -{10,}\n# (?P<title>[^\n]+)\n# -{10,}$", re.MULTILINE)


def _specs() -> dict[str, FunctionType]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: obj for name, obj in vars(hookspecs).items() if isinstance(obj, FunctionType) and hasattr(obj, marker)
    }


def _documented(markdown: str) -> set[str]:
    """Hook names that have their own heading, e.g. ``### trackpoint_select_backend``."""
    return set(re.findall(r"^#{2,4} `?(trackpoint_\w+)`?\s*$", markdown, re.MULTILINE))


def _missing(markdown: str) -> list[str]:
    return sorted(set(_specs()) - _documented(markdown))


def test_hookspecs_exist_and_are_marked() -> None:
    names = set(_specs())
    assert {"trackpoint_register_backends", "trackpoint_select_backend"} <= names
    # Every public trackpoint_* function of the module is a marked spec (no unmarked legacy specs).
    public = {n for n, o in vars(hookspecs).items() if n.startswith("trackpoint_") and isinstance(o, FunctionType)}
    assert public == names


def test_every_hookspec_has_a_section_in_docs() -> None:
    assert _missing(HOOKS_MD.read_text()) == []


def test_checker_fails_when_a_section_is_missing() -> None:
    text = HOOKS_MD.read_text().replace("### trackpoint_select_backend", "### something else")
    assert _missing(text) == ["trackpoint_select_backend"]


def test_doc_sections_follow_the_module_banners() -> None:
    """Banner comments in hookspecs.py and ``##`` sections in hooks.md list the same groups in the same order."""
    source = inspect.getsource(hookspecs)
    banners = [m.group("title") for m in BANNER.finditer(source)]
    doc_sections = re.findall(r"^## (.+)$", HOOKS_MD.read_text(), re.MULTILINE)
    assert banners == [s for s in doc_sections if s in banners] and banners
    # And each hook sits under the banner (and the doc section) of the same name.
    for name in _specs():
        before = source[: source.index(f"def {name}(")]
        banner = [m.group("title") for m in BANNER.finditer(before)][-1]
        doc = HOOKS_MD.read_text()
        section = doc[: doc.index(f"### {name}")].rsplit("\n## ", 1)[1].splitlines()[0]
        assert section == banner, name


@pytest.mark.parametrize("name", sorted(_specs()))
def test_docstring_template(name: str) -> None:
    spec = _specs()[name]
    doc = inspect.getdoc(spec) or ""
    summary = doc.splitlines()[0] if doc else ""
    assert summary.endswith("."), f"{name}: one-line summary first"
    params = list(inspect.signature(spec).parameters)
    for p in params:
        assert re.search(rf"^{p}\n    ", doc, re.MULTILINE), f"{name}: parameter {p!r} is not described"
    assert "Returns\n-------" in doc and "None" in doc.split("Returns\n-------")[1], f"{name}: say what None means"
    assert ".. versionadded::" in doc, f"{name}: versionadded"
    headings = re.findall(r"^(\w[\w ]*)\n-{3,}$", doc, re.MULTILINE)
    assert headings[-1] == "Use in backends", f"{name}: a 'Use in backends' note closes the docstring"
    assert doc.index("Use in backends") > doc.index(".. versionadded::"), f"{name}: versionadded before the note"
    firstresult = bool(getattr(spec, f"{hookspecs.PROJECT_NAME}_spec")["firstresult"])
    assert ("This hook is ``firstresult``" in doc) == firstresult, f"{name}: firstresult sentence"
