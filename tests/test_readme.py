"""README.md and docs/*.md cannot show code that fails.

Every ```python block runs, in a fresh namespace, in a folder that holds what the blocks refer to: a real small
student at runs/NAME/student (Pendulum-v1's spaces, so `make_env` builds a real env) and its C export at
runs/NAME/export-c. Shell blocks (```bash, ```console, indented) are not run, but every `policykd ...` command in
them (and in inline code) must name a real subcommand with real options. The two set-up commands are contractual
(CI runs the second), and every relative link must point at a file that exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

CHECKOUT = Path(__file__).resolve().parents[1]
README = CHECKOUT / "README.md"
PAGES = [README, *sorted((CHECKOUT / "docs").glob("*.md"))]
SETUP_COMMANDS = (
    "bash scripts/install.sh && .venv/bin/policykd distill -c configs/distill/default.yaml",
    "bash scripts/install.sh && .venv/bin/python -m pytest -q",
)
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
SHELL_LANGUAGES = {"bash", "console", "sh", "shell", ""}


def _name(page: Path) -> str:
    return page.relative_to(CHECKOUT).as_posix()


def fenced_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line number of the opening fence, language, code) of every fenced block; the code is dedented by the fence's
    indent (a block inside a list item)."""
    lines, blocks, i = page.read_text().splitlines(), [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            indent, language, start, body = match.group(1), match.group(2).lower(), i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            assert i < len(lines), f"{_name(page)}:{start}: unclosed code fence"
            blocks.append((start, language, "\n".join(body)))
        i += 1
    return blocks


def indented_code_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines of indented (4-space) code blocks outside fences."""
    lines, out, in_fence = page.read_text().splitlines(), [], False
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if not in_fence and line.startswith("    ") and line.strip():
            out.append((number, line.strip()))
    return out


PYTHON_BLOCKS = [pytest.param(code, id=f"{_name(page)}:{line}") for page in PAGES
                 for line, language, code in fenced_blocks(page) if language in ("python", "py")]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory) -> Path:
    """A folder with runs/NAME/student (a small Pendulum-v1 student with its env record) and runs/NAME/export-c."""
    from policykd.env_factory import EnvSpec
    from policykd.students import Student, StudentSpec

    root = tmp_path_factory.mktemp("readme")
    spec = StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", hidden=(16, 16), activation="relu",
                       action_low=(-2.0,), action_high=(2.0,))
    student_dir = root / "runs" / "NAME" / "student"
    Student(spec).save(student_dir, card_extra={"teacher": {"env": EnvSpec("Pendulum-v1").to_json()}})
    if shutil.which("cc"):
        from policykd.export import export_student

        export_student(student_dir, root / "runs" / "NAME" / "export-c", "c")
    return root


def test_the_readme_has_python_blocks():
    assert any(p.id.startswith("README.md:") for p in PYTHON_BLOCKS), "no ```python block found in README.md"


@pytest.mark.parametrize("code", PYTHON_BLOCKS)
def test_python_block_runs(code, example_dir, monkeypatch):
    if "export-c" in code and not shutil.which("cc"):
        pytest.skip("no C compiler (cc): the C export's block cannot run here")
    monkeypatch.chdir(example_dir)
    exec(compile(code, "<markdown block>", "exec"), {"__name__": "__markdown__"})


def test_setup_commands_are_in_the_readme():
    """The two fresh-machine commands are contractual: each must be a line of a code block of README.md."""
    code_lines = {line.strip() for _, _, code in fenced_blocks(README) for line in code.splitlines()}
    code_lines |= {text for _, text in indented_code_lines(README)}
    for command in SETUP_COMMANDS:
        assert command in code_lines, f"README.md lost its set-up command: {command}"


_COMMAND = re.compile(r"(?:^|(?<=[\s/]))policykd[ \t]+(?=[a-z])")
_INLINE = re.compile(r"(?<!`)`(policykd [^`]+)`(?!`)")


def _command_lines() -> list[tuple[str, str]]:
    """(where, text after `policykd `) for every policykd command in code blocks and inline code of the pages."""
    found = []
    for page in PAGES:
        candidates = [(line + offset + 1, text) for line, language, code in fenced_blocks(page) if language in SHELL_LANGUAGES
                      for offset, text in enumerate(code.splitlines())]
        candidates += indented_code_lines(page)
        text = page.read_text()
        candidates += [(text.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " ")) for m in _INLINE.finditer(text)]
        for line, code in candidates:
            for match in _COMMAND.finditer(code):
                found.append((f"{_name(page)}:{line}", code[match.end():]))
    return found


def _split(where: str, rest: str) -> list[str]:
    lexer = shlex.shlex(rest, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError as e:
        pytest.fail(f"{where}: cannot parse `policykd {rest}`: {e}")
    for i, token in enumerate(tokens):
        if token and set(token) <= set("|&;"):  # the next command of a pipeline or list
            return tokens[:i]
    return tokens


def _is_group(command) -> bool:
    return hasattr(command, "commands")  # typer's groups (typer vendors click: no isinstance on click.Group)


def test_every_policykd_command_in_the_docs_exists():
    """Each `policykd SUBCOMMAND ...` shown in README.md and docs/*.md is a command of `policykd --help`, and each
    of its --options is an option of that command."""
    from policykd.cli import app

    runner, root = CliRunner(), typer.main.get_command(app)
    commands = _command_lines()
    assert any(where.startswith("README.md:") for where, _ in commands), "no policykd command found in README.md"
    top_help = runner.invoke(app, ["--help"])
    assert top_help.exit_code == 0, top_help.output
    problems, checked = [], {}
    for where, rest in commands:
        tokens = _split(where, rest)
        path, command = [], root
        while tokens and _is_group(command) and not tokens[0].startswith("-"):
            name = tokens.pop(0)
            if name not in command.commands:
                problems.append(f"{where}: `policykd {' '.join([*path, name])}` is not a command (has: {sorted(command.commands)})")
                command = None
                break
            path.append(name)
            command = command.commands[name]
        if command is None:
            continue
        if _is_group(command):
            problems.append(f"{where}: `policykd {' '.join(path)}` needs a subcommand ({sorted(command.commands)})")
            continue
        key = tuple(path)
        if key not in checked:  # the command exists in policykd's own --help, not only in the click tree
            result = runner.invoke(app, [*path, "--help"])
            checked[key] = result.exit_code == 0
            if not checked[key]:
                problems.append(f"{where}: `policykd {' '.join(path)} --help` exits {result.exit_code}: {result.output.strip()[:200]}")
        options = {opt for param in command.params for opt in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))}
        for token in tokens:
            if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", token) and token.split("=", 1)[0] not in options:
                problems.append(f"{where}: `policykd {' '.join(path)}` has no option {token.split('=', 1)[0]}")
    assert not problems, "\n".join(problems)


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors, in_fence = set(), False
    for line in page.read_text().splitlines():
        if line.strip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    problems = []
    for match in _LINK.finditer(page.read_text()):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{_name(page)}: link to {target}: {file} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            problems.append(f"{_name(page)}: link to {target}: no heading #{anchor} in {_name(file)}")
    assert not problems, "\n".join(problems)


def test_install_script_stops_before_replacing_a_users_torch_outside_the_range(tmp_path):
    """A torch that pip would replace (here 2.0.1) is its owner's to change: install.sh says so and installs nothing."""
    import subprocess
    import venv

    venv.EnvBuilder(with_pip=False).create(tmp_path / "env")
    python = tmp_path / "env" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                               text=True, check=True).stdout.strip())
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text('__version__ = "2.0.1+cu117"\n')
    before = sorted(p.name for p in site.iterdir())
    result = subprocess.run(["bash", str(CHECKOUT / "scripts" / "install.sh")], capture_output=True, text=True, timeout=120,
                            env={"POLICYKD_PYTHON": str(python), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "has torch 2.0.1+cu117, and policykd needs torch>=2.1,<3" in result.stderr and "nothing was installed" in result.stderr
    assert sorted(p.name for p in site.iterdir()) == before
