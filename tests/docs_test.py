"""The README and the guides in docs/ stay true.

* The README opens with the two commands, which `.ci/run` runs.
* Every ```python block of README.md and docs/*.md runs alone in a fresh
  interpreter (as a reader pastes it) and prints what the ```text block
  right under it shows, floats at their printed precision (slow: each
  block imports TensorFlow).
* Every figure shown is a file in docs/ that a documented command makes.
* Every relative link, anchor, file path and module path exists; no link
  leaves the repository.
"""

import ast
import builtins
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
NOTES = [*DOCS, ROOT / "BUILD_NOTES.md"]
# A ```python block, and the ```text block right under it if there is one.
BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\n*^```text\n(.*?)^```\n)?",
                   re.S | re.M)


def text(path):
    return path.read_text(encoding="utf-8")


def python_blocks():
    """(id, code, expected output or None) of every python block."""
    found = []
    for path in DOCS:
        content = text(path)
        for match in BLOCK.finditer(content):
            line = content[:match.start()].count("\n") + 1
            name = f"{path.relative_to(ROOT)}:{line}"
            found.append(pytest.param(match.group(1), match.group(2),
                                      id=name))
    return found


BLOCKS = python_blocks()


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert first_block.splitlines() == [
        "pip install -e . && python -m pipelines.tune"
        " --workdir=runs/tune_digits",
        "pip install -e '.[test]' && python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install --quiet --disable-pip-version-check -e '.[test," in ci
    # The README's `python -m pytest`, as its two tiers.
    assert '\npython -m pytest -m "not slow"\npython -m pytest -m slow\n' in ci


def test_every_python_block_shows_its_output_and_imports_what_it_uses():
    # Without running anything: each block has its ```text block, parses,
    # and uses no name it does not bind (the NameError of a block that
    # leans on an earlier one).
    assert len(BLOCKS) >= 8
    for param in BLOCKS:
        code, expected = param.values
        assert expected is not None, f"{param.id}: no ```text block under it"
        tree = ast.parse(code)
        bound = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((alias.asname or alias.name).split(".")[0]
                             for alias in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        used = {node.id for node in ast.walk(tree)
                if isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)}
        assert used <= bound, f"{param.id}: undefined {sorted(used - bound)}"


NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def same_output(found, expected):
    """Equal line by line and word by word; a float to the last digit it
    is printed with, give or take one unit there (another CPU may round
    the other way)."""
    found_lines = found.strip("\n").splitlines()
    expected_lines = expected.strip("\n").splitlines()
    if len(found_lines) != len(expected_lines):
        return False
    for got, want in zip(found_lines, expected_lines, strict=True):
        if NUMBER.sub("#", got) != NUMBER.sub("#", want):
            return False
        for a, b in zip(NUMBER.findall(got), NUMBER.findall(want),
                        strict=True):
            if a == b:
                continue
            mantissa, _, exponent = b.lower().partition("e")
            if "." not in mantissa:
                return False  # An integer (or a count) is exact.
            decimals = len(mantissa.split(".")[1])
            unit = 10.0 ** (int(exponent or 0) - decimals)
            try:
                if abs(float(a.replace(",", "")) - float(b.replace(",", ""))
                       ) > unit * 1.000001:
                    return False
            except ValueError:
                return False
    return True


def test_same_output_reads_floats_at_their_printed_precision():
    assert same_output("T = 0.000392\n", "T = 0.000391")
    assert not same_output("T = 0.000393\n", "T = 0.000391")
    assert same_output("found 1.012, ECE 0.7%", "found 1.011, ECE 0.8%")
    assert same_output("T = 9.78e-05", "T = 9.77e-05")
    assert not same_output("857,083 parameters", "857,082 parameters")
    assert not same_output("step 10", "step 11")
    assert not same_output("a 1.0", "b 1.0")
    assert not same_output("1.0\n2.0", "1.0")


@pytest.mark.slow
@pytest.mark.parametrize(("code", "expected"), BLOCKS)
def test_python_block_runs_alone_and_prints_what_the_docs_show(
        code, expected, tmp_path):
    # A fresh interpreter in an empty directory, with the package
    # importable as `pip install -e .` makes it.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert same_output(result.stdout, expected), (
        f"printed:\n{result.stdout}\nthe docs show:\n{expected}")
    assert list(tmp_path.iterdir()) == []  # The block writes nothing.


def figure_commands():
    """{figure: command} from docs/numbers.md's figures table."""
    section = text(ROOT / "docs" / "numbers.md").split("## The figures", 1)[1]
    section = section.split("\n## ", 1)[0]
    made = {}
    for row in section.splitlines():
        if row.startswith("| `docs/"):
            figures, command = row.strip("|").split("|")[:2]
            for name in re.findall(r"`(docs/[\w.]+\.png)`", figures):
                made[name] = command
    return made


def test_every_figure_is_made_by_a_documented_command():
    made = figure_commands()
    shown = set()
    for path in DOCS:
        folder = path.parent.relative_to(ROOT)
        for target in re.findall(r"\]\(([\w./-]+\.png)\)", text(path)):
            shown.add(os.path.normpath(folder / target))
    on_disk = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.png")}
    assert shown == on_disk == set(made)
    for name, command in made.items():
        # The command names a pipeline or tool that exists, and ends with
        # the picture at its place.
        scripts = re.findall(r"python (?:-m pipelines\.(\w+)|tools/(\w+)\.py)",
                             command)
        assert scripts, name
        for module, tool in scripts:
            path = (ROOT / "pipelines" / f"{module}.py" if module
                    else ROOT / "tools" / f"{tool}.py")
            assert path.exists(), path
        # Written there, or a file of that name copied into docs/.
        base = name.removeprefix("docs/")
        assert name in command or (f"/{base} " in command
                                   and " docs/" in command), (name, command)


def test_every_command_in_the_numbers_table_exists():
    content = text(ROOT / "docs" / "numbers.md")
    for module in re.findall(r"python -m pipelines\.(\w+)", content):
        assert (ROOT / "pipelines" / f"{module}.py").exists(), module
    for tool in re.findall(r"python tools/(\w+)\.py", content):
        assert (ROOT / "tools" / f"{tool}.py").exists(), tool
    for config in re.findall(r"configs/(\w+)\.py", content):
        assert (ROOT / "configs" / f"{config}.py").exists(), config


def anchors(path):
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text(path), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        found.add(slug.replace(" ", "-"))
    return found


def test_links_stay_in_the_repository_and_resolve():
    for path in NOTES:
        content = re.sub(r"```.*?```", "", text(path), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", content):
            assert not re.match(r"[a-z]+:", target), (path.name, target)
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), (path.name, target)
            assert ROOT in linked.parents or linked == ROOT, target
            if anchor:
                assert anchor in anchors(linked), (path.name, target)


def module_exists(parts):
    """Whether `tf_temperature.a.b[.name]` names a module (and, past the
    module, a name its source defines or imports)."""
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.exists():
                rest = parts[cut:]
                return not rest or re.search(
                    rf"\b{re.escape(rest[0])}\b", text(candidate)) is not None
    return False


def test_module_paths_and_files_named_in_the_docs_exist():
    for path in NOTES:
        content = text(path)
        for name in re.findall(
                r"`((?:tf_temperature|studies|training|runtime)"
                r"(?:\.[A-Za-z_]\w*)+)", content):
            parts = name.split(".")
            if parts[0] != "tf_temperature":
                parts = ["tf_temperature", *parts]
            assert module_exists(parts), (path.name, name)
        for file in re.findall(
                r"(?<![\w/])((?:tf_temperature|tests|tools|configs|pipelines"
                r"|examples)/[\w/]+\.py)", content):
            if re.search(r"/[A-Z_]+\.py$", file):
                continue  # A placeholder: configs/NAME.py.
            assert (ROOT / file).exists(), (path.name, file)
