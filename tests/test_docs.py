"""The documentation stays true to the code: every ``clipshift`` command line in README.md and
docs/*.md parses with the real command-line parser, every option of the synopsis exists, every
relative link and image points to a file (and heading) that exists, every dotted ``clipshift.…``
name in the prose resolves, and the README stays a front page (at most 250 lines).

The commands are parsed, never run: the parser of :func:`clipshift.cli.build_parser`, with the
``key=value`` settings allowed after the options as ``clipshift`` itself allows them."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipshift.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}  # code blocks whose lines are commands
USAGE_BLOCKS = {"text"}  # synopses: `[...]` optional, `a|b` a choice; their options are checked by name
OPERATORS = {"|", "||", "&&", ";", "&"}
LAUNCHERS = {"time", "nohup", "exec"}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # line of the first line of code (1-based)
    lang: str
    lines: tuple[str, ...]


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the line each starts on."""
    blocks, fence, lang, start, body = [], None, "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, lang, start, body = match.group(1), match.group(2).lower(), number + 1, []
        elif stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            blocks.append(Block(path, start, lang, tuple(body)))
            fence = None
        else:
            body.append(line)
    return blocks


def prose(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks."""
    inside, out = None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if inside is None and re.match(r"(`{3,}|~{3,})", stripped):
            inside = stripped[:3]
        elif inside is not None and stripped.startswith(inside):
            inside = None
        elif inside is None:
            out.append((number, line))
    return out


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with the line it starts on."""
    out, pending, first = [], "", 0
    for offset, line in enumerate(block.lines):
        if not pending:
            first = block.line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def shell_words(text: str) -> list[list[str]]:
    """The simple commands of one shell line (split at pipes, `&&`, `;`), comments dropped."""
    text = re.sub(r"^\s*\$\s+", "", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    for token in lexer:
        if token in OPERATORS:
            commands.append(words)
            words = []
        else:
            words.append(token)
    return [c for c in [*commands, words] if c]


def clipshift_args(words: list[str]) -> list[str] | None:
    """The arguments after `clipshift` in one command (``clipshift ...``, ``VAR=x clipshift ...``,
    ``time clipshift ...``, ``torchrun ... -m clipshift.cli ...``, ``python -m clipshift ...``), else None."""
    i = 0
    while i < len(words) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]) or words[i] in LAUNCHERS):
        i += 1
    if i == len(words):
        return None
    if words[i] == "clipshift" or words[i].endswith("/clipshift"):
        return words[i + 1:]
    for j in range(i, len(words) - 1):
        if words[j] == "-m" and words[j + 1] in ("clipshift", "clipshift.cli"):
            return words[j + 2:]
    return None


def documented_commands() -> list[tuple[str, list[str] | str]]:
    """("FILE:LINE", arguments) of every `clipshift` command line in the docs' shell code blocks
    (a string instead of the arguments: a line that does not split as shell words)."""
    found = []
    for path in doc_files():
        for block in code_blocks(path):
            if block.lang not in SHELL_BLOCKS:
                continue
            for line, text in logical_lines(block):
                where = f"{path.relative_to(ROOT)}:{line}"
                try:
                    commands = shell_words(text)
                except ValueError as error:  # an unclosed quote
                    found.append((where, f"{text.strip()}: {error}"))
                    continue
                found += [(where, args) for args in map(clipshift_args, commands) if args is not None]
    return found


def parse_command(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """What ``clipshift`` does before running (clipshift.cli.main): parse, with key=value settings
    allowed after the options; argparse's SystemExit on anything it does not know."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def parse_failure(argv: list[str]) -> str | None:
    """argparse's complaint about `argv` (None: it parses); an option abbreviated, which argparse
    would accept, is refused too: the docs spell every option out."""
    options = subcommand_options().get(argv[0] if argv else "", set())
    inexact = [w.split("=")[0] for w in argv[1:] if w.startswith("--") and w.split("=")[0] not in options]
    if inexact and argv[0] in subcommand_options():
        return f"clipshift {argv[0]} has no option {', '.join(inexact)} (spelled out)"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parse_command(build_parser(), argv)
    except SystemExit as stop:
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        return lines[-1] if lines else f"argparse exited with {stop.code}"
    return None


def subcommand_options() -> dict[str, set[str]]:
    """{sub-command: its option strings} of the real parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


# --- the tests ---------------------------------------------------------------------------------------------------

def test_the_docs_hold_commands_of_every_subcommand():
    commands = documented_commands()
    documented = {args[0] for _, args in commands if isinstance(args, list) and args}
    assert documented == set(subcommand_options()), (documented, set(subcommand_options()))
    assert len(commands) > 40, len(commands)


def test_every_documented_command_parses():
    wrong = []
    for where, argv in documented_commands():
        if isinstance(argv, str):
            wrong.append(f"{where}: {argv}")
            continue
        problem = parse_failure(argv)
        if problem is not None:
            wrong.append(f"{where}: clipshift {shlex.join(argv)}\n    {problem}")
    assert not wrong, "documented commands that clipshift's parser refuses:\n" + "\n".join(wrong)


def test_a_misspelled_option_is_refused():
    """The check above fails on a misspelled option (and on a missing required one)."""
    assert parse_failure(["quickstart", "--out", "runs/x", "seed=1"]) is None
    assert "has no option --ouy" in parse_failure(["quickstart", "--ouy", "runs/x"])
    assert "unrecognized arguments: runs/y" in parse_failure(["report", "runs/x", "runs/y"])
    assert "--results" in parse_failure(["er", "--out", "runs/er"])
    assert "--resum" in parse_failure(["train", "a.yaml", "--resum"])  # argparse alone takes the abbreviation
    [words] = shell_words("$ OMP_NUM_THREADS=1 torchrun --nproc_per_node 4 -m clipshift.cli train a.yaml  # DDP")
    assert clipshift_args(words) == ["train", "a.yaml"]
    assert clipshift_args(shell_words("time clipshift study --quick --out d | tail -3")[0]) == ["study", "--quick",
                                                                                              "--out", "d"]


def test_every_option_of_the_synopses_exists():
    options, wrong = subcommand_options(), []
    for path in doc_files():
        for block in code_blocks(path):
            if block.lang not in USAGE_BLOCKS:
                continue
            for line, text in logical_lines(block):
                match = re.match(r"\s*clipshift\s+([\w-]+)(.*)", text)
                if not match:
                    continue
                command, rest = match.group(1), match.group(2).split("#")[0]
                if command not in options:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: no sub-command {command!r}")
                    continue
                wrong += [f"{path.relative_to(ROOT)}:{line}: clipshift {command} has no option {option}"
                          for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
                          if option not in options[command]]
    assert not wrong, "\n".join(wrong)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^quickstart:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    first = code_blocks(ROOT / "README.md")[0]
    assert [line.split("#")[0].strip() for line in first.lines] == ["make quickstart", "make test"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(re.sub(r"^#+", "", text)) for _, text in prose(path) if re.match(r"#{1,6} ", text)}


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code (blocks and `spans`)."""
    out = []
    for number, text in prose(path):
        text = re.sub(r"`[^`]*`", "", text)
        out += [(number, target) for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]
    return out


def test_every_relative_link_points_to_a_file():
    wrong, count = [], 0
    for path in doc_files():
        for line, target in relative_links(path):
            count += 1
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}:{line}: {target}"
            if not resolved.exists():
                wrong.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                wrong.append(f"{where}: no heading #{anchor} in {resolved.name}")
    assert count > 30, count
    assert not wrong, "broken links:\n" + "\n".join(wrong)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for _, t in relative_links(ROOT / "README.md")}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


def resolves(name: str) -> bool:
    """Whether a dotted name is a module of the package or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_every_dotted_name_in_the_prose_resolves(path):
    names = {}
    for number, text in prose(path):
        for span in re.findall(r"`([^`]+)`", text):
            for name in re.findall(r"(?<![\w/.-])clipshift(?:\.[A-Za-z_]\w*)+", span):
                names.setdefault(name.rstrip("."), number)
    wrong = [f"{path.relative_to(ROOT)}:{line}: {name}" for name, line in sorted(names.items()) if not resolves(name)]
    assert not wrong, "names that no longer exist:\n" + "\n".join(wrong)
