"""The README's commands and example code stay true."""

import pathlib
import re

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


def test_readme_classifier_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    rate, temperature = map(float, capsys.readouterr().out.split())
    # Step 0: the gradual warmup starts from the B = 256 rate 0.1.
    np.testing.assert_allclose([rate, temperature], [0.1, 0.1 / 1024],
                               rtol=1e-6)


def test_readme_models_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    code = next(block for block in blocks if "cifar_resnet(56)" in block)
    namespace = {}
    exec(compile("import tf_temperature as tt\n" + code, "README.md",
                 "exec"), namespace)
    for name, count in (("resnet56", 853_018), ("plain56", 853_018)):
        model = namespace[name]
        assert sum(int(np.prod(w.shape))
                   for w in model.trainable_weights) == count


def test_readme_fit_per_phase_example_runs():
    # The batch-growth recipe for `model.fit`: one call per phase meets
    # every phase start (10 + 5 + 1 steps at B = 10, 20, 100).
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    code = next(block for block in blocks if "batch_growth=(2, 5)" in block)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert int(namespace["optimizer"].iterations) == 16
    assert float(namespace["optimizer"].batch_size) == 100
