"""The README and docs/*.md never lie: every ```bash and ```python block runs, in order, in one scratch folder, and a
```text block right after a block is checked against what that block printed. Conventions (docs/contributing.md):

* ``<!-- docs-test: tiny "OLD" -> "NEW" ... -->`` before a block: the test runs the block with each OLD replaced by
  NEW (fewer seeds, epochs, samples); every OLD must occur in the block, so a directive cannot silently rot.
* ``<!-- docs-test: needs NAME, ... -->``: run only when each is there (a Python module, or ``data`` for the real
  corpora in shared/data); otherwise the block is reported as skipped.
* ``<!-- docs-test: skip REASON -->``: never run (a GPU, a cluster, hours); the reason is required.
* A ```text block right after a run block lists lines its output must contain, in order (other lines may come
  between). Numbers must match within ``<!-- docs-test: tolerance X -->`` (default 0), except after a tiny block,
  whose numbers are not the documented command's and are not compared (the text is).

The README runs first; each docs page then runs in a scratch folder of its own, where runs/tour is the README tour's
run (a trained LMF checkpoint at runs/tour/lmf/seed1111/best.pt).
`affectfuse` commands run in this process (no interpreter start-up per command); anything else runs in bash, with
`affectfuse` and `python` on the PATH pointing at this checkout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from affectfuse.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->", re.DOTALL)
FENCE = re.compile(r"^```(\w*)\s*$")
NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?")
SHELL_SYNTAX = set("|&;<>()$`*?[]{}~")
RUN_LANGUAGES = ("bash", "python")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    directives: list[tuple[str, str]] = field(default_factory=list)
    expected: str | None = None
    """The ```text block right after this one, if any."""

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    def directive(self, name: str) -> list[str]:
        return [args for kind, args in self.directives if kind == name]


def parse(page: Path) -> list[Block]:
    """The fenced blocks of `page`, each with the directives just above it and the ```text block just after it."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    last_run: Block | None = None
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            found = DIRECTIVE.fullmatch(lines[i].strip())  # a line of its own: not one quoted in prose or a table
            pending += [found.groups()] if found else []
            if lines[i].strip() and not found:
                pending, last_run = [], None  # prose between a block and a text block: not its output
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[i + 1 : end]) + "\n"
        language = fence.group(1)
        if language in RUN_LANGUAGES:
            last_run = Block(page, i + 1, language, body, pending)
            blocks.append(last_run)
        elif language == "text" and last_run is not None:
            last_run.expected = body
            last_run.directives += pending
            last_run = None
        else:
            last_run = None
        pending = []
        i = end + 1
    return blocks


def prepared(block: Block) -> str:
    code = block.code
    for args in block.directive("tiny"):
        pairs = re.findall(r'"((?:[^"\\]|\\.)*)"\s*->\s*"((?:[^"\\]|\\.)*)"', args)
        assert pairs, f"{block.where}: a tiny directive needs one or more \"OLD\" -> \"NEW\" pairs, got {args!r}"
        for old, new in ((re.sub(r"\\(.)", r"\1", o), re.sub(r"\\(.)", r"\1", n)) for o, n in pairs):
            assert old in code, f"{block.where}: tiny directive replaces {old!r}, which is not in the block"
            code = code.replace(old, new)
    return code


def shared_data() -> Path | None:
    """The real corpora: $AFFECTFUSE_DATA's first folder, else shared/data beside the checkout (as tests/conftest)."""
    candidates = [Path(p) for p in os.environ.get("AFFECTFUSE_DATA", "").split(os.pathsep) if p]
    return next((c for c in [*candidates, ROOT.parent / "shared" / "data"] if (c / "mosi").is_dir()), None)


def missing_needs(block: Block) -> list[str]:
    missing = []
    for args in block.directive("needs"):
        for need in filter(None, (n.strip() for n in args.split(","))):
            if need == "data":
                if shared_data() is None:
                    missing.append("the real data (shared/data, or $AFFECTFUSE_DATA)")
            elif importlib.util.find_spec(need) is None:
                missing.append(f"the Python module {need}")
    return missing


def commands(code: str) -> list[str]:
    """Shell lines with their continuations joined; comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_affectfuse(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = cli_main(argv)
        except SystemExit as exit_:  # tyro's --help and parse errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue()


def in_process(line: str) -> list[str] | None:
    """argv of an `affectfuse ...` or `python -m affectfuse ...` line without shell syntax (else None: use bash)."""
    body = line.split(" #", 1)[0]
    if SHELL_SYNTAX & set(body):
        return None
    try:
        words = shlex.split(body)
    except ValueError:
        return None
    if words[:1] == ["affectfuse"]:
        return words[1:]
    if words[:3] in (["python", "-m", "affectfuse"], ["python3", "-m", "affectfuse"]):
        return words[3:]
    return None


def run_bash(code: str, workdir: Path, env: dict[str, str]) -> tuple[int, str]:
    lines = commands(code)
    output = []
    for line in lines:
        argv = in_process(line)
        if argv is not None:
            status, printed = run_affectfuse(argv)
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=workdir, env=env, text=True,
                                  capture_output=True, timeout=300)
            status, printed = done.returncode, done.stdout + done.stderr
        output.append(printed)
        if status != 0:
            return status, "".join(output) + f"\n[exit code {status} from: {line}]"
    return 0, "".join(output)


def run_python(code: str, where: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exec(compile(code, where, "exec"), {"__name__": "__main__"})
        except Exception as error:  # noqa: BLE001 - reported with the block's place
            return 1, out.getvalue() + f"\n{type(error).__name__}: {error}"
    return 0, out.getvalue()


def _matches(expected: str, actual: str, tolerance: float | None) -> bool:
    """Same text with numbers masked; numbers within `tolerance` (None: not compared)."""
    if NUMBER.sub("#", expected).split() != NUMBER.sub("#", actual).split():
        return False
    if tolerance is None:
        return True
    want = [float(n.replace(",", "")) for n in NUMBER.findall(expected)]
    got = [float(n.replace(",", "")) for n in NUMBER.findall(actual)]
    return all(abs(a - b) <= tolerance for a, b in zip(want, got, strict=True))


def check_output(block: Block, printed: str) -> str | None:
    """None if every line of the expected output occurs in `printed`, in order; else the first line not found."""
    assert block.expected is not None
    tiny = bool(block.directive("tiny"))
    tolerance = None if tiny else float((block.directive("tolerance") or ["0"])[0])
    actual = [line for line in printed.splitlines() if line.strip()]
    position = 0
    for want in (line for line in block.expected.splitlines() if line.strip()):
        while position < len(actual) and not _matches(want, actual[position], tolerance):
            position += 1
        if position == len(actual):
            return want
        position += 1
    return None


def run_page(page: Path, workdir: Path, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(failures, skipped) of every block of `page`, run in order in `workdir`."""
    failures, skipped = [], []
    for block in parse(page):
        reasons = block.directive("skip")
        if reasons:
            assert all(reasons), f"{block.where}: a skip directive needs a reason"
            skipped.append(f"{block.where}: {reasons[0]}")
            continue
        missing = missing_needs(block)
        if missing:
            skipped.append(f"{block.where}: needs {', '.join(missing)}")
            continue
        try:
            code = prepared(block)
        except AssertionError as error:
            failures.append(str(error))
            continue
        started = time.perf_counter()
        if block.language == "bash":
            status, printed = run_bash(code, workdir, env)
        else:
            status, printed = run_python(code, block.where)
        seconds = time.perf_counter() - started
        if status != 0:
            failures.append(f"{block.where} ({block.language}) failed:\n{textwrap.indent(code, '    ')}\n"
                            f"{printed[-3000:]}")
        elif block.expected is not None and (line := check_output(block, printed)) is not None:
            failures.append(f"{block.where}: the output shown below the block has {line!r}, which the block did not "
                            f"print (in that order):\n{printed[-3000:]}")
        if seconds > 20:
            failures.append(f"{block.where} took {seconds:.0f} s; give it a tiny directive (docs/contributing.md)")
    return failures, skipped


@contextlib.contextmanager
def inside(folder: Path):  # contextlib.chdir is Python >= 3.11
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A scratch folder holding `affectfuse` and `python` (on PATH, pointing at this checkout) and the real data as
    shared/data, when there is any; each page runs in a folder of its own inside it (`page_folder`)."""
    base = tmp_path_factory.mktemp("docs")
    data = shared_data()
    if data is not None:
        (base / "shared").mkdir()
        (base / "shared" / "data").symlink_to(data)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    for name, target in (("affectfuse", f'exec "{sys.executable}" -m affectfuse "$@"'),
                         ("python", f'exec "{sys.executable}" "$@"'), ("python3", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{target}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if data is not None:
        env["AFFECTFUSE_DATA"] = str(data)
    return base, env


def page_folder(base: Path, page: Path) -> Path:
    """base/<page>: the repository's examples/, benchmarks/ and docs/ linked in, ../shared/data the real data, and
    runs/tour the README tour's run (pages run apart, so one page's outputs never collide with another's)."""
    work = base / page.stem
    work.mkdir()
    for name in ("examples", "benchmarks", "docs"):
        (work / name).symlink_to(ROOT / name)
    if page.name != "README.md":
        (work / "runs").mkdir()
        (work / "runs" / "tour").symlink_to(base / "README" / "runs" / "tour")
    return work


@pytest.fixture(scope="module")
def readme(scratch: tuple[Path, dict[str, str]]) -> tuple[list[str], list[str]]:
    base, env = scratch
    work = page_folder(base, ROOT / "README.md")
    with inside(work):
        return run_page(ROOT / "README.md", work, env)


def test_readme_blocks_run_and_print_what_it_shows(readme: tuple[list[str], list[str]]) -> None:
    failures, skipped = readme
    print("not run:", *skipped, sep="\n  ")  # shown with pytest -rP
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_docs_blocks_run_and_print_what_they_show(page: Path, readme, scratch) -> None:
    base, env = scratch
    work = page_folder(base, page)
    with inside(work):
        failures, skipped = run_page(page, work, env)
    print("not run:", *skipped, sep="\n  ")
    assert not failures, "\n\n".join(failures)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    bash = [b.code.strip() for b in parse(ROOT / "README.md") if b.language == "bash"]
    test_command = next(c for c in bash if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_directives_are_checked(tmp_path: Path) -> None:
    """A tiny directive whose OLD is not in its block fails; a text block after prose is no block's output; a number
    off the shown one fails an untiny block and passes a tiny one."""
    page = tmp_path / "page.md"
    page.write_text('<!-- docs-test: tiny "--seeds 3" -> "--seeds 1" -->\n```bash\naffectfuse models --seeds 2\n```\n'
                    "\nprose\n\n```text\nnot output\n```\n\n```python\nprint('mae 0.5')\n```\n```text\nmae 0.5\n```\n")
    blocks = parse(page)
    assert [b.expected for b in blocks] == [None, "mae 0.5\n"]
    with pytest.raises(AssertionError, match="not in the block"):
        prepared(blocks[0])
    assert check_output(blocks[1], "x\nmae 0.5\n") is None
    assert check_output(blocks[1], "mae 0.6\n") == "mae 0.5"
    blocks[1].directives.append(("tiny", '"a" -> "b"'))
    assert check_output(blocks[1], "mae 0.6\n") is None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    broken = [link for link in local if link and not (page.parent / link.strip("`")).exists()]
    assert not broken, f"{page.name} links to missing files: {broken}"
