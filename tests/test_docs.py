"""The documentation names only what exists: every command-line flag shown in README.md and
docs/ is an option of a parser in the project (or of the standard tool it is shown with),
every link resolves, and every repository path named in backticks exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "datasets" / "README.md", *(ROOT / "docs").glob("*.md")])
#: Flags of the tools the docs show beside the project's own commands.
OTHER_TOOLS = {"--nproc_per_node", "--no-build-isolation", "--force-reinstall", "--index-url", "-e", "-m", "-q",
               "-x", "-k", "-opt", "--master_port", "-c", "-i", "-o", "-r", "-v", "-n", "--upgrade", "--help",
               "--import-mode", "-h", "-ra", "--durations", "--standalone", "--nnodes", "--rdzv_id",
               "--rdzv_backend", "--rdzv_endpoint"}  # fmt: skip
#: Top folders of the repository; a backticked path starting with one of them must exist.
TRACKED_TOP = ("esc_arch/", "tests/", "docs/", "options/", "benchmarks/", "scripts/", "datasets/")
#: Paths in the docs that are examples of the user's data or of what a run writes.
USER_PATHS = re.compile(r"^(datasets/(DIV2K|Flickr2K|DF2K|Set5|Set14|B100|Urban100|Manga109|[A-Za-z0-9_]*/)|"
                        r"tests/data/images/.*\*|experiments/|results/|esc_demo/)")  # fmt: skip


def _flags_in_sources() -> set[str]:
    """Every option the project's parsers declare (esc, basicsr, datasets/ and benchmarks/ scripts)."""
    found = set()
    for path in [*ROOT.glob("esc_arch/**/*.py"), *ROOT.glob("datasets/*.py"), *ROOT.glob("benchmarks/*.py")]:
        for call in re.findall(r"add_argument\(([^)]*)", path.read_text()):
            found.update(re.findall(r"[\"'](--?[A-Za-z][\w-]*)[\"']", call))
    return found


#: A command line in the docs starts with one of these (or is a bare option, `--tile 256`).
COMMANDS = re.compile(r"^\s*(\.venv/bin/|esc |basicsr |python|torchrun|bash |pip |--|-[a-z](\s|$))")


def _shown_flags(text: str) -> set[str]:
    """Flags on command lines in code: lines of fenced blocks and inline code spans that start
    with a command or an option."""
    blocks = [line for block in re.findall(r"```.*?```", text, re.S) for line in block.splitlines()]
    lines = [line for line in blocks + re.findall(r"`([^`\n]+)`", text) if COMMANDS.match(line)]
    return {flag for line in lines for flag in re.findall(r"(?<!\S)(--?[A-Za-z][\w-]*)", line)}


def test_the_flag_reader_finds_the_projects_options():
    flags = _flags_in_sources()
    assert {"--tile", "--overwrite", "--auto_resume", "--force_yml", "--window-size", "--hr"} <= flags
    assert _shown_flags("run `esc upscale --tile 256 -o out` then\n```\nbasicsr train -opt x.yml --debug\n```") == {
        "--tile", "-o", "-opt", "--debug",
    }  # fmt: skip


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flag_shown_exists(doc):
    known = _flags_in_sources() | OTHER_TOOLS
    unknown = sorted(f for f in _shown_flags(doc.read_text()) if f not in known and not f.startswith("--gpu"))
    assert not unknown, f"{doc.relative_to(ROOT)} shows flags no parser has: {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_named_path_exists(doc):
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target) and not (doc.parent / target).exists():
            missing.append(target)
    for path in re.findall(r"`([\w./-]+)`", text):
        if path.startswith(TRACKED_TOP) and not USER_PATHS.match(path) and "*" not in path and "{" not in path:
            if not (ROOT / path.rstrip("/")).exists():
                missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {sorted(set(missing))}"


def test_every_option_of_esc_upscale_is_in_the_inference_table():
    """docs/inference.md's option table of ``esc upscale`` has a row for each option its parser
    declares (by any of its spellings, ``-m`` or ``--model``; ``--help`` aside)."""
    from esc_arch.cli import esc_parser

    commands = next(a for a in esc_parser()._actions if a.dest == "command")
    options = [set(a.option_strings) for a in commands.choices["upscale"]._actions if a.dest != "help"]
    text = (ROOT / "docs" / "inference.md").read_text()
    table = text[text.index("| option | meaning |") :].split("\n\n")[0]
    rows = {f for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for f in re.findall(r"(--?[A-Za-z][\w-]*)", cell)}
    missing = sorted(min(spellings, key=len) for spellings in options if not spellings & rows)
    assert len(options) > 10 and not missing, f"docs/inference.md's table of esc upscale lacks {missing}"
