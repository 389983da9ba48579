"""Find, check and run the fenced code blocks of the Markdown pages in ``docs/``.

The convention (also in ``docs/README.md``): every fence names what it holds
in its info string, and that decides what the tests do with it.

=====================  ================================================================
info string            what the tests do
=====================  ================================================================
``python``             run: the page's blocks in order, in one namespace, in an empty
                       temporary working directory (:func:`run_page`)
``python fragment``    an excerpt that cannot run alone (a signature, a method body
                       without its class): parsed, not run
``bash``               commands a user types in a shell: ``bash -n`` syntax check; not
                       run here (``tests/test_docs_try_locally.py`` runs the emulator
                       commands of ``docs/try-locally.md``)
``toml``               parsed with :mod:`tomllib`
``text``               output or a file listing: not checked
=====================  ================================================================

A fence without an info string, or with one not in the table, is an error:
code must never slip past the tests by not saying what it is.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
import traceback
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DOCS",
    "KINDS",
    "Block",
    "DocBlockError",
    "blocks",
    "check_block",
    "main",
    "pages",
    "parse",
    "run_page",
    "shell_exports",
]

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: Allowed info strings: language -> the tags it may carry.
KINDS: Mapping[str, frozenset[str]] = {
    "python": frozenset({"fragment"}),
    "bash": frozenset(),
    "toml": frozenset(),
    "text": frozenset(),
}

# An opening fence: up to three spaces of indent (a list item may indent more,
# which is handled by the indent group), three or more backticks or tildes, the info string.
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class DocBlockError(AssertionError):
    """A block of a docs page breaks the convention, does not parse, or fails when run."""


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a docs page.

    Parameters
    ----------
    page
        The page, relative to ``docs/`` (``"backends/s3.md"``).
    line
        1-based line number of the opening fence.
    lang
        First word of the info string (``""`` when there is none).
    tags
        The remaining words of the info string.
    code
        The block's content, with the fence's indentation removed.
    """

    page: str
    line: int
    lang: str
    tags: tuple[str, ...]
    code: str

    @property
    def path(self) -> Path:
        """The Markdown file (``page`` may also be an absolute path outside ``docs/``)."""
        return DOCS / self.page

    @property
    def where(self) -> str:
        """``file:line`` of the opening fence, relative to the repository when inside it."""
        shown = self.path.relative_to(DOCS.parent) if self.path.is_relative_to(DOCS.parent) else self.path
        return f"{shown}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether :func:`run_page` executes this block."""
        return self.lang == "python" and "fragment" not in self.tags

    def compiled(self) -> Any:
        """The block as a code object whose line numbers are those of the Markdown file.

        Padding with newlines puts the first code line on line ``line + 1``, so a
        traceback points into the page itself. The code does not inherit this
        module's ``from __future__ import annotations``: a reader's script has
        none, and postponed annotations make ``dataclasses`` look up the page's
        module, which does not exist.
        """
        return compile("\n" * self.line + self.code, str(self.path), "exec", dont_inherit=True)


def parse(text: str, page: str) -> list[Block]:
    """Every fenced block of the Markdown ``text`` of ``page``, in order.

    Raises
    ------
    DocBlockError
        A fence is never closed.
    """
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        if fence[0] == "`" and "`" in info:
            # ```` ```python ```` inside a paragraph is an inline code span, not a fence.
            i += 1
            continue
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        if j == len(lines):
            raise DocBlockError(f"{Block(page, i + 1, '', (), '').where}: the fence {fence}{info} is never closed")
        words = info.split()
        code = "\n".join(body) + "\n" if body else ""
        out.append(Block(page, i + 1, words[0] if words else "", tuple(words[1:]), code))
        i = j + 1
    return out


def pages() -> list[str]:
    """Every Markdown page under ``docs/`` (recursively), relative to it, sorted."""
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def blocks(page: str) -> list[Block]:
    """The fenced blocks of ``docs/<page>``."""
    return parse((DOCS / page).read_text(encoding="utf-8"), page)


def check_block(block: Block) -> None:
    """Check what can be checked without running: the info string, and that the code parses.

    Raises
    ------
    DocBlockError
        Unknown or missing info string, an unknown tag, or code that does not parse.
    """
    if block.lang not in KINDS:
        named = f"info string {block.lang!r}" if block.lang else "no info string"
        raise DocBlockError(
            f"{block.where}: fence with {named}; start it with one of {sorted(KINDS)} "
            "(see docs/README.md for what the tests do with each)"
        )
    unknown = set(block.tags) - KINDS[block.lang]
    if unknown:
        allowed = sorted(KINDS[block.lang]) or "none"
        raise DocBlockError(
            f"{block.where}: unknown tag(s) {sorted(unknown)} on a {block.lang} block; allowed: {allowed}"
        )
    try:
        if block.lang == "python":
            ast.parse("\n" * block.line + block.code, filename=str(block.path))
        elif block.lang == "toml":
            tomllib.loads(block.code)
        elif block.lang == "bash":
            done = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True, check=False)
            if done.returncode:
                raise DocBlockError(done.stderr.strip())
    except (SyntaxError, tomllib.TOMLDecodeError, DocBlockError) as exc:
        raise DocBlockError(f"{block.where}: the {block.lang} block does not parse: {exc}\n{block.code}") from exc


def run_page(page_blocks: Iterable[Block], namespace: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the runnable python blocks in order in one namespace; return the namespace.

    The caller chooses the working directory and the environment.

    Raises
    ------
    DocBlockError
        A block raised; the message names the page and line and shows the block.
    """
    ns: dict[str, Any] = {"__name__": "__docs__"}
    ns.update(namespace or {})
    for block in page_blocks:
        if not block.runs:
            continue
        try:
            exec(block.compiled(), ns)  # noqa: S102 - our own documentation
        except Exception as exc:
            raise DocBlockError(f"{block.where}: the python block failed: {exc!r}\n{block.code}") from exc
    return ns


def shell_exports(page_blocks: Iterable[Block]) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of every ``export NAME=value ...`` line of the bash blocks, in order."""
    for block in page_blocks:
        if block.lang != "bash":
            continue
        for line in block.code.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] != ["export"]:
                continue
            for word in words[1:]:
                name, sep, value = word.partition("=")
                if not sep:
                    raise DocBlockError(f"{block.where}: `export {word}` sets no value; write export NAME=value")
                yield name, value


def main(argv: list[str]) -> int:
    """``python tests/docblocks.py PAGE``: run the python blocks of one page, as the docs test does.

    ``PAGE`` is relative to ``docs/`` or a path to any Markdown file. Runs in
    the current directory and environment; exit status 1 and the failing block
    on stderr if a block raises.
    """
    if len(argv) != 1:
        print("usage: python tests/docblocks.py PAGE.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_absolute() and not path.exists():
        path = DOCS / path
    page = path.relative_to(DOCS).as_posix() if path.is_relative_to(DOCS) else str(path)
    try:
        run_page(parse(path.read_text(encoding="utf-8"), page))
    except DocBlockError as exc:
        traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        print(f"\n{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
