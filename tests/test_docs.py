"""The documentation is complete and its links work.

- ``docs/cli.md`` documents every command of the live click tree (``pixelmine.cli.main``, walked
  recursively): a heading that names the command in code, e.g. ``### `pixelmine ingest` ``, whose section
  has an example (a fenced code block) and lists every option of the command (each name in ``opts`` and
  ``secondary_opts``, e.g. ``--json``, ``-w``) in the first cell of an options-table row, and every argument
  by its metavar (``SOURCES``). It documents no command and no option that does not exist.
- ``docs/findings.md`` has a section for every registered finding kind.
- Every relative link and image in README.md, docs/*.md and benchmarks/README.md points to a file that
  exists (the screenshots included) and, with a ``#fragment``, to a heading that exists.

A new command or option therefore fails these tests until docs/cli.md describes it.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from pixelmine.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
LINKED_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
OPTION_NAME = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# -- the command tree ---------------------------------------------------------------------------------
def walk(command: click.Command, path: tuple[str, ...] = ("pixelmine",)):
    """(path, command) for ``command`` and every visible subcommand below it, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from walk(sub, (*path, name))


def option_names(command: click.Command) -> list[str]:
    names = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names += [*param.opts, *param.secondary_opts]
    return names


def argument_names(command: click.Command) -> list[str]:
    return [param.human_readable_name for param in command.params if isinstance(param, click.Argument)]


COMMANDS = {" ".join(path): command for path, command in walk(main)}


# -- markdown structure -----------------------------------------------------------------------------
def lines_outside_fences(text: str):
    """(line, inside_fence) for every line; fence lines themselves count as inside."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            yield line, True
            inside = not inside
            continue
        yield line, inside


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, title) of every heading outside fenced code blocks."""
    found = []
    for number, (line, fenced) in enumerate(lines_outside_fences(text)):
        match = None if fenced else HEADING.match(line)
        if match:
            found.append((number, len(match.group(1)), match.group(2)))
    return found


def commands_named(title: str) -> list[str]:
    """Command paths a heading names in code: `pixelmine`, `pixelmine ingest`, ..."""
    names = [" ".join(span.split()) for span in CODE_SPAN.findall(title)]
    return [name for name in names if name == "pixelmine" or name.startswith("pixelmine ")]


def command_sections(text: str) -> dict[str, str]:
    """Command path ('pixelmine ingest') -> the text of the section whose heading names it in code.

    A section runs from its heading to the next heading of the same or a higher level, or to the next
    heading that names a command (so `pixelmine` does not swallow the subcommands below it)."""
    lines = text.splitlines()
    found = headings(text)
    sections: dict[str, str] = {}
    for i, (number, level, title) in enumerate(found):
        end = next((n for n, lvl, t in found[i + 1:] if lvl <= level or commands_named(t)), len(lines))
        for name in commands_named(title):
            sections[name] = "\n".join(lines[number + 1:end])
    return sections


def table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def documented_options(section: str) -> set[str]:
    """Option names written in code in the first cell of the section's table rows."""
    names: set[str] = set()
    for line, fenced in lines_outside_fences(section):
        if fenced or not line.lstrip().startswith("|") or re.fullmatch(r"[\s|:-]+", line):
            continue
        for span in CODE_SPAN.findall(table_cells(line)[0]):
            names.update(OPTION_NAME.findall(span.replace("\\|", "|")))
    return names


def has_fenced_block(section: str) -> bool:
    return any(FENCE.match(line) for line in section.splitlines())


@pytest.fixture(scope="module")
def cli_sections() -> dict[str, str]:
    return command_sections(CLI_DOC.read_text(encoding="utf-8"))


# -- docs/cli.md is complete ------------------------------------------------------------------------
def test_every_command_has_a_section(cli_sections):
    missing = [name for name in COMMANDS if name not in cli_sections]
    assert not missing, (f"docs/cli.md has no section for {len(missing)} command(s): {', '.join(missing)}. "
                         "Add a heading naming each in code, e.g. ### `pixelmine ingest`, with a purpose line, "
                         "an example and an options table.")


def test_every_option_is_in_its_commands_options_table(cli_sections):
    missing = {}
    for name, command in COMMANDS.items():
        if name not in cli_sections:
            continue  # reported by test_every_command_has_a_section
        documented = documented_options(cli_sections[name])
        absent = [option for option in option_names(command) if option not in documented]
        if absent:
            missing[name] = absent
    assert not missing, ("docs/cli.md lacks these options in the first cell of an options-table row of their "
                         "command's section:\n" + "\n".join(f"  {name}: {', '.join(options)}"
                                                           for name, options in missing.items()))


def test_every_argument_is_named_in_its_commands_section(cli_sections):
    missing = {}
    for name, command in COMMANDS.items():
        if name not in cli_sections:
            continue
        absent = [arg for arg in argument_names(command) if not re.search(rf"\b{re.escape(arg)}\b", cli_sections[name])]
        if absent:
            missing[name] = absent
    assert not missing, ("docs/cli.md does not name these arguments in their command's section (write the usage "
                         "line, e.g. `pixelmine ingest [OPTIONS] [SOURCES]...`):\n"
                         + "\n".join(f"  {name}: {', '.join(args)}" for name, args in missing.items()))


def test_every_command_section_has_an_example(cli_sections):
    without = [name for name in COMMANDS if name in cli_sections and not has_fenced_block(cli_sections[name])]
    assert not without, f"docs/cli.md has no example (a fenced code block) for: {', '.join(without)}"


def test_nothing_documented_that_does_not_exist(cli_sections):
    stale_commands = sorted(set(cli_sections) - set(COMMANDS))
    stale_options = {}
    for name, section in cli_sections.items():
        if name in COMMANDS:
            extra = sorted(documented_options(section) - set(option_names(COMMANDS[name])))
            if extra:
                stale_options[name] = extra
    assert not stale_commands and not stale_options, (
        "docs/cli.md documents what the CLI does not have:"
        + (f"\n  commands: {', '.join(stale_commands)}" if stale_commands else "")
        + "".join(f"\n  {name}: {', '.join(options)}" for name, options in stale_options.items()))


# -- docs/findings.md covers every kind ------------------------------------------------------------------
def test_every_finding_kind_has_a_section_in_findings_md():
    from pixelmine.discover import KINDS
    from pixelmine.discover import run as _finders  # noqa: F401  (registers every finder and its kinds)

    doc = ROOT / "docs" / "findings.md"
    titled = {span for _, _, title in headings(doc.read_text(encoding="utf-8")) for span in CODE_SPAN.findall(title)}
    missing = sorted(set(KINDS) - titled)
    assert not missing, (f"docs/findings.md has no section for the finding kind(s) {', '.join(missing)}; add a "
                         "heading such as ### `kind` saying what it means, how it is found and what to do")


# -- links ----------------------------------------------------------------------------------------------
def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, _, title in headings(path.read_text(encoding="utf-8")):
        slug = github_slug(title)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(path: Path) -> list[str]:
    """Link and image targets outside code, without web addresses."""
    targets = []
    for line, fenced in lines_outside_fences(path.read_text(encoding="utf-8")):
        if fenced:
            continue
        reference = REFERENCE_LINK.match(line)
        line = CODE_SPAN.sub("", line)
        found = MARKDOWN_LINK.findall(line) + HTML_LINK.findall(line) + ([reference.group(1)] if reference else [])
        targets += [t for t in found if not SCHEME.match(t)]
    return targets


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no file {shown(resolved)})")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading with anchor #{fragment} in {shown(resolved)})")
    return broken


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(doc):
    assert doc.exists(), f"{doc.relative_to(ROOT)} is missing"
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(ROOT)} has {len(broken)} broken link(s):\n  " + "\n  ".join(broken)


def test_readme_shows_both_screenshots():
    links = relative_links(ROOT / "README.md")
    missing = [png for png in ("docs/report.png", "docs/web-ui.png") if png not in links]
    assert not missing, f"README.md does not embed {', '.join(missing)} (refresh them with docs/screenshots.py)"


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40])
    assert "make demo" in head and "make test" in head, "README.md must show `make demo` and `make test` in its first 40 lines"


# -- the checker itself ---------------------------------------------------------------------------------
def test_the_checker_finds_a_missing_option_and_a_stale_link(tmp_path):
    text = ("# CLI\n\n## `pixelmine`\n| option | |\n|---|---|\n| `--version` | |\n\n"
            "### `pixelmine ingest`\n```bash\n# not a heading\npixelmine ingest --json\n```\n"
            "| option | what |\n|---|---|\n| `-w`, `--workspace DIR` · `--json` | common |\n"
            "| `--backend onnx\\|torch` | see `--other` |\n\n## Next\n| `--elsewhere` | |\n")
    sections = command_sections(text)
    assert set(sections) == {"pixelmine", "pixelmine ingest"}
    assert documented_options(sections["pixelmine"]) == {"--version"}
    assert documented_options(sections["pixelmine ingest"]) == {"-w", "--workspace", "--json", "--backend"}
    assert "--version" not in documented_options(sections["pixelmine ingest"])  # sections do not nest upwards
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n[ok](#title) [gone](missing.md) ![img](pic.png) `[code](ignored.md)`\n"
                   "[bad anchor](#nope) [web](https://example.com)\n", encoding="utf-8")
    (tmp_path / "pic.png").write_bytes(b"")
    problems = broken_links(doc)
    assert [p.split(" ")[0] for p in problems] == ["missing.md", "#nope"]
