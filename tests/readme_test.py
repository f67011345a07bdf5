"""The README's commands and example code stay true."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


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


def test_readme_python_snippets_run_as_pasted_in_order(tmp_path):
    # Every ```python block of the README, top to bottom, in one fresh
    # Python process (as a reader pastes them into one session), then
    # checks of what they made.
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 4
    epilogue = """
import json
print("CHECK " + json.dumps({
    "ids": np.asarray(ids).tolist(), "dtype": str(np.asarray(ids).dtype),
    "params": [sum(int(np.prod(w.shape)) for w in m.trainable_weights)
               for m in (resnet56, plain56)],
    "iterations": int(optimizer.iterations),
    "batch_size": float(optimizer.batch_size)}))
"""
    program = tmp_path / "readme_snippets.py"
    program.write_text("\n".join(blocks) + epilogue, encoding="utf-8")
    here = tmp_path / "cwd"
    here.mkdir()
    result = subprocess.run([sys.executable, str(program)], cwd=here,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    # The classifier: step 0 of the gradual warmup is the B = 256 rate 0.1.
    rate, temperature = map(float, lines[0].split())
    np.testing.assert_allclose([rate, temperature], [0.1, 0.1 / 1024],
                               rtol=1e-6)
    found = json.loads(lines[-1].removeprefix("CHECK "))
    # Sampling: one id per row, in the vocabulary, int32.
    assert found["dtype"] == "int32" and len(found["ids"]) == 2
    assert all(0 <= i < 50_000 for i in found["ids"])
    # The ResNet-56 and its plain twin.
    assert found["params"] == [853_018, 853_018]
    # The fit-per-phase recipe meets every phase start: 10 + 5 + 1 steps
    # at B = 10, 20, 100.
    assert found["iterations"] == 16 and found["batch_size"] == 100
    assert list(here.iterdir()) == []  # The snippets write nothing.


def test_every_readme_figure_is_made_by_a_documented_command():
    section = README.split("## The figures: how each is made", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines()
            if line.startswith("| `docs/")]
    made = {}
    for row in rows:
        figures, command = row.strip("|").split("|")[:2]
        for name in re.findall(r"`(docs/[\w.]+\.png)`", figures):
            made[name] = command
    shown = set(re.findall(r"\]\((docs/[\w.]+\.png)\)", README))
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
