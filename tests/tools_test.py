"""Tests of the tools: plot_schedule, benchmark, equipartition, coverage;
what they print and where they write."""

import functools
import importlib.util
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@functools.cache
def load_tool(name):
    # Once per process: a tool's absl flags can be defined only once.
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alternate_reports_each_sides_cores_busy_and_cpu_per_step():
    import time

    parts = load_tool("benchmark_parts")

    class Spin:  # One core, ~2 ms of CPU per step.
        def measure(self, steps):
            end = time.process_time() + 0.002 * steps
            while time.process_time() < end:
                pass
            return 1.0

    class Sleep:  # No CPU at all.
        def measure(self, steps):
            time.sleep(0.002 * steps)
            return 1.0

    usage = {}
    results = parts.alternate({"spin": Spin(), "sleep": Sleep()}, 20, 2,
                              usage)
    assert results == {"spin": [1.0, 1.0], "sleep": [1.0, 1.0]}
    # Busy is CPU over wall time: a loaded machine (other tests beside
    # it) lowers the spinner's share of its core, never its CPU per step.
    for busy, cpu_ms in usage["spin"]:
        assert 0.35 < busy <= 1.05 and 1.9 < cpu_ms < 3.0
    for busy, cpu_ms in usage["sleep"]:
        assert busy < 0.2 and cpu_ms < 0.5


def test_forward_macs_match_the_published_resnet_counts():
    # The FLOP limit's numerator: ResNet-50 at 224x224 is 4.09 GMAC
    # (torchvision's count, He et al. 2016's "3.8 x 10^9 FLOPs" without
    # the stem and the head's), CIFAR ResNet-20 at 32x32 40.6 MMAC.
    import keras

    import tf_temperature as tt

    parts = load_tool("benchmark_parts")
    assert parts.forward_macs(tt.models.imagenet_resnet(50)) == (
        pytest.approx(4.09e9, rel=0.01))
    assert parts.forward_macs(tt.models.cifar_resnet(20)) == (
        pytest.approx(40.6e6, rel=0.01))
    keras.backend.clear_session()


def test_matmul_peak_is_a_positive_rate():
    parts = load_tool("benchmark_parts")
    assert 1e8 < parts.matmul_peak(size=256, chain=2, repeats=2) < 1e14


def test_plot_schedule_draws_overlapping_temperatures(tmp_path):
    tool = load_tool("plot_schedule")
    kwargs = dict(eta0=1e-3, epochs=10, warmup_epochs=2,
                  boundaries_epochs=[5, 8], decay_rate=0.1,
                  examples_per_epoch=2 ** 14, points=50)
    linear = tool.schedule_curves([256, 1024, 4096], rule="linear", **kwargs)
    after_warmup = linear[256][0] >= 2
    for batch in (1024, 4096):
        np.testing.assert_allclose(linear[batch][2][after_warmup],
                                   linear[256][2][after_warmup], rtol=1e-6)
    sqrt = tool.schedule_curves([256, 4096], rule="sqrt", **kwargs)
    assert np.all(sqrt[4096][2] < sqrt[256][2] / 3)  # T ~ 1 / sqrt(B).
    output = tmp_path / "schedule.png"
    tool.plot(linear, "linear", str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plot_curves_tool():
    """tools/plot_curves.py, its absl flags (`--output` also plot_schedule's)
    defined for the test and removed after it."""
    from absl import flags

    def forget():
        for name in ("output", "ymax"):
            if name in flags.FLAGS:
                delattr(flags.FLAGS, name)

    forget()
    yield load_tool("plot_curves")
    forget()


def test_plot_curves_draws_a_shared_rate_drop_once_in_gray(
        tmp_path, plot_curves_tool):
    import pandas as pd

    tool = plot_curves_tool

    def run(rates):
        return pd.DataFrame([
            {"epoch": e + 1, "split": split, "error": 0.5 / (e + 1),
             "learning_rate": rate}
            for e, rate in enumerate(rates) for split in ("train", "eval")])

    runs = {"resnet": run([0.1, 0.1, 0.05, 0.05, 0.025]),
            "plain": run([0.1, 0.1, 0.05, 0.05, 0.025]),
            "other": run([0.1, 0.05, 0.05, 0.05, 0.025])}
    assert tool.rate_drops(runs["resnet"]) == [2.0, 4.0]
    assert tool.drop_lines(runs) == [(4.0, None), (2.0, 0), (2.0, 1),
                                     (1.0, 2)]
    two = {k: runs[k] for k in ("resnet", "plain")}
    assert tool.drop_lines(two) == [(2.0, None), (4.0, None)]
    output = tmp_path / "curves.png"
    tool.plot(runs, str(output))
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_benchmark_input_suite_runs_from_one_command(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=input",
         "--images=8", "--repeats=1", f"--output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "benchmark.md").read_text()
    assert "tf_temperature folder pipeline, 1 core" in table
    assert "keras image_dataset_from_directory" in table
    import pandas as pd

    rows = pd.read_csv(tmp_path / "benchmark.csv")
    assert len(rows) == 4 and (rows["images_per_sec"] > 0).all()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("benchmark: 1 suite(s) input, 1 repeat(s)")
    assert any(line.startswith("[1/1] input: ") for line in lines)
    assert lines[-1].startswith("benchmark done in ")
    assert lines[-1].endswith(f"wrote benchmark.csv and benchmark.md in "
                              f"{tmp_path}")
    bad = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=gpu",
         f"--output_dir={tmp_path / 'x'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "error: `--suites` must be among" in bad.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_benchmark_startup_suite_times_the_commands_against_tensorflow(
        tmp_path):
    import subprocess
    import sys

    import pandas as pd

    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=startup",
         "--repeats=1", f"--output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "benchmark.csv").set_index("variant")
    seconds = rows["process_seconds"]
    assert list(seconds.index) == [
        "pipelines.train --help", "pipelines.train, a config error",
        "pipelines.train, a bad flag", "import tensorflow (for scale)"]
    # Each command answers before TensorFlow would have loaded.
    assert (seconds.iloc[:3] < seconds.iloc[3]).all(), seconds
    table = (tmp_path / "benchmark.md").read_text()
    assert re.search(r"\| startup +\| pipelines\.train --help +\| +"
                     r"[0-9.]+ s \|", table), table


@pytest.mark.slow
def test_benchmark_study_suite_times_the_engine_against_the_trainer(
        tmp_path):
    # Reduced: 2 seeds, 1 epoch. The rows exist and are positive; the
    # population beats one trainer run per seed (by 30x at full size).
    import subprocess
    import sys

    import pandas as pd

    result = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--suites=study",
         "--study_seeds=2", "--study_epochs=1", f"--output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "benchmark.csv").set_index("variant")
    trainer = rows.loc["CNN: 2 training-pipeline runs, one per seed"]
    engine = rows.loc["CNN: population of 2 copies"]
    assert engine["seconds_per_seed_trial"] < trainer[
        "seconds_per_seed_trial"]
    assert engine["speedup"] > 1.0
    assert rows.filter(like="images/s", axis=0)["images_per_sec"].gt(0).all()
    steps = rows.filter(like="7-conv", axis=0)["ms_per_step"]
    assert len(steps) == 3 and steps.gt(0).all()


def test_the_jax_study_trains_as_the_population_engine():
    # tools/jax_study.py is the yard stick for the study's speed: the same
    # work. From the engine's starts, data and orders, its copies end where
    # the engine's do, and its recorded runs read the same curves and
    # gradient norms (to float32 rounding; the op order differs).
    pytest.importorskip("jax", reason="tools/jax_study.py needs JAX (the "
                        "jax extra)")
    from conftest import override

    from configs import tune_digits
    from tf_temperature.studies.eta0 import runners

    jax_study = load_tool("jax_study")
    runner = runners.PopulationRunner(override(tune_digits.get_config(), {
        "tune.epochs": 2, "tune.seeds": (0, 3)}))
    task = runner.task
    first = tuple(np.stack(w) for w in zip(*[
        task.initial_weights(seed) for seed in (0, 3)], strict=True))
    train = jax_study.build(task.x_train, task.y_train, task.x_eval,
                            task.y_eval, first, epochs=2, seeds=(0, 3))
    eta0s = (2.0**-8, 2.0**-6)
    for recorded in (False, True):
        eta = [64 * e for e in eta0s for _ in (0, 3)]
        found = train(64, eta, [0, 1, 0, 1], recorded)
        runner.expect([(64, e) for e in eta0s], 2, recorded)
        rows = [row for e in eta0s
                for row in runner.run(None, 64, e, 2, recorded)]
        np.testing.assert_allclose(found[0], [r["value"] for r in rows],
                                   rtol=1e-4)
        np.testing.assert_allclose(
            found[2], [r["final_train_loss"] for r in rows], rtol=1e-4)
        if recorded:
            for i, key in enumerate(("eval_loss", "small_sq", "big_sq")):
                np.testing.assert_allclose(
                    found[4 + i], [r["trajectory"][key] for r in rows],
                    rtol=1e-3, err_msg=key)
    assert train.compile_seconds > 0


def run_tool(name, *flags, cwd):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / f"{name}.py"), *flags],
        cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tools_write_only_where_told_and_name_what_they_wrote(tmp_path):
    import pandas as pd

    here = tmp_path / "cwd"
    here.mkdir()
    tiny = ["--batch_sizes=4,8", "--eta0=0.005", "--chains=4"]
    quiet = run_tool("equipartition", *tiny, cwd=here)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines = quiet.stdout.splitlines()
    assert lines[0].startswith("equipartition: 4 points (2 eta x 2 B)")
    assert [line.split()[0] for line in lines if line.startswith("[")] == [
        "[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert lines[-1].endswith("no file written (--output=PATH writes the "
                              "table as CSV)")
    assert list(here.iterdir()) == []  # Nothing in the current directory.
    # The TensorFlow loading banner is held back.
    assert "cuda drivers" not in quiet.stderr
    written = run_tool("equipartition", *tiny, "--output=out/table.csv",
                       cwd=here)
    assert written.returncode == 0, written.stderr[-3000:]
    assert written.stdout.splitlines()[-1].endswith("wrote out/table.csv")
    table = pd.read_csv(here / "out" / "table.csv")
    assert len(table) == 4 and table["stable"].dtype == bool
    assert table["measured"].dtype == float
    # A figure tool without --output: one line, nothing written.
    schedule = run_tool("plot_schedule", cwd=here)
    assert schedule.returncode == 2
    assert schedule.stderr.strip().splitlines()[-1] == (
        "error: --output: name the PNG to write, for example "
        "--output=runs/schedule.png")
    assert sorted(p.name for p in here.iterdir()) == ["out"]


@pytest.mark.slow
def test_coverage_tool_prints_the_table_and_writes_only_where_told(tmp_path):
    import pandas as pd

    here = tmp_path / "cwd"
    here.mkdir()
    tiny = ["--sets=2", "--seeds=4", "--samples=100"]
    printed = run_tool("coverage", *tiny, cwd=here)
    assert printed.returncode == 0, printed.stderr[-3000:]
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("coverage: 2 disjoint sets of 4 seeds")
    assert lines[1].startswith("[1/1] 2 sets")
    assert any(line.startswith("| slope ") for line in lines)
    assert lines[-1].endswith("no file written (--output=DIR writes the "
                              "tables as CSV)")
    assert list(here.iterdir()) == []
    written = run_tool("coverage", *tiny, "--output=out", "--quiet",
                       cwd=here)
    assert written.returncode == 0, written.stderr[-3000:]
    table = pd.read_csv(here / "out" / "coverage.csv")
    assert len(table) == 7  # Six batch sizes and the slope.
    assert table["two_stage_coverage"].between(0, 1).all()
    assert len(pd.read_csv(here / "out" / "coverage_sets.csv")) == 2 * 7
    bad = run_tool("coverage", "--sets=0", "--output=never", cwd=here)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: `--sets` must be an integer >= 1. Received: --sets=0")
    assert sorted(p.name for p in here.iterdir()) == ["out"]


def test_study_flop_counts_training_evaluations_and_the_final_pass():
    # The FLOP limit's numerator for `--suites=jax`: per copy (one row of
    # trials.csv) 6 x MACs per training example, plus 2 x MACs per example
    # evaluated (a fine copy 4 times per epoch, every copy once at the end).
    import pandas as pd

    parts = load_tool("benchmark_parts")
    macs = 64 * 64 + 64 * 10
    trials = pd.DataFrame({"steps": [2560, 80], "batch_size": [8, 256],
                           "stage": ["coarse", "fine"]})
    final = 2 * macs * (1024 + 773)
    want = (6 * macs * 20480 + final) + (
        6 * macs * 20480 + 2 * macs * 773 * 80 + final)
    assert parts.study_flop(trials) == want


def test_equilibrium_flop_counts_training_and_the_measurements():
    # The FLOP limit's numerator for `--suites=equilibrium`, counted by
    # hand for one run of 3 seeds at B = 16 on the 1,438 training digits
    # (89 steps an epoch): SGD time 400 at eta 0.4 is 1,000 steps, 12
    # epochs 1,068 (the longer); 6 x MACs per trained example, 2 x MACs
    # per example of the 12 measurements over the whole training set.
    from configs import equilibrium_digits

    parts = load_tool("benchmark_parts")
    config = equilibrium_digits.get_config()
    eq = config.equilibrium
    eq.etas, eq.batch_sizes, eq.momenta = (0.4,), (16,), (0.0,)
    eq.eta, eq.seeds, eq.schedule_cuts = 0.4, 3, 0
    macs = 64 * 128 + 128 * 128 + 128 * 10
    want = 3 * (6 * macs * 16 * 1068 + 2 * macs * 1438 * 12)
    assert parts.equilibrium_flop(config, 1438) == want
    # With the schedule (eta 0.4 for 1,068 steps, then 0.2 for 2,000) the
    # population of 2 runs x 3 seeds trains 3,068 steps, 35 whole epochs:
    # 3,115 steps and 35 measurements for every copy.
    eq.schedule_cuts = 1
    assert parts.equilibrium_flop(config, 1438) == 6 * (
        6 * macs * 16 * 3115 + 2 * macs * 1438 * 35)


def test_benchmark_children_time_a_side_alone_and_the_equilibrium(
        monkeypatch):
    # The trainer suite's own-process side and the equilibrium suite's
    # child, reduced: what each returns, in this process.
    import tensorflow as tf

    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # benchmark_parts.
    bench = load_tool("benchmark")
    alone = bench.run_child("trainer_side", {
        "side": "trainer", "model": "resnet20", "batch": 4, "size": 8,
        "steps": 2, "repeats": 2})
    assert len(alone["values"]) == 2 and min(alone["values"]) > 0
    assert all(busy > 0 and cpu_ms > 0 for busy, cpu_ms in alone["usage"])
    found = bench.run_child("equilibrium", {
        "equilibrium.etas": [0.4], "equilibrium.batch_sizes": [16],
        "equilibrium.momenta": [0.0], "equilibrium.eta": 0.4,
        "equilibrium.seeds": 2, "equilibrium.schedule_cuts": 0,
        "equilibrium.sgd_time": 20.0, "equilibrium.min_epochs": 2})
    macs = 64 * 128 + 128 * 128 + 128 * 10
    # 2 epochs of 89 steps (longer than SGD time 20 at 0.4: 50 steps).
    assert found["flop"] == 2 * (6 * macs * 16 * 178 + 2 * macs * 1438 * 2)
    assert found["training_seconds"] > 0
    tf.keras.backend.clear_session()


@pytest.mark.slow
def test_thread_usage_prints_a_line_per_repeat_and_stops_its_spinners():
    # Reduced: a tiny ResNet-20, 20 steps a repeat, with the busy loops
    # beside it. Each side's first line is well-formed; killed (no
    # `finally` runs), the tool leaves no spinner behind.
    import signal
    import subprocess
    import sys
    import time

    tool = subprocess.Popen(
        [sys.executable, "tools/thread_usage.py", "--batch=4", "--size=8",
         "--steps=20", "--repeats=1000", "--spinners"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [tool.stdout.readline(), tool.stdout.readline()]
    tool.send_signal(signal.SIGKILL)
    tool.wait(timeout=60)
    pattern = re.compile(
        r"^0 (trainer|fit) +\d+ img/s, ([0-9.]+) cores busy \| machine "
        r"busy ([0-9.]+), idle ([0-9.]+), steal ([0-9.]+) \| on one CPU "
        r"(\d+) of (\d+) samples \|(( \S+:[0-9.]+)*)$")
    found = [m for m in map(pattern.match, lines) if m]
    assert [m.group(1) for m in found] == ["trainer", "fit"], lines
    for match in found:
        busy, machine_busy, idle, steal = map(float, match.group(2, 3, 4, 5))
        assert 0 < busy < 8 and 0 <= idle < 8 and 0 <= steal < 8
        assert machine_busy > 0
        assert int(match.group(7)) >= 1  # 20 steps: samples were taken.
    for _ in range(50):  # Each spinner looks at its parent every ~50 ms.
        spinners = subprocess.run(
            ["pgrep", "-f", f"getppid.. == {tool.pid}:"],
            capture_output=True, text=True)
        if not spinners.stdout.strip():
            break
        time.sleep(0.2)
    assert not spinners.stdout.strip(), spinners.stdout
    bad = subprocess.run(
        [sys.executable, "tools/thread_usage.py", "--steps=0"], cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: `--steps` must be an integer >= 1."
                                  " Received: 0")


@pytest.mark.slow
def test_benchmark_cooling_suite_alternates_the_two_runners(monkeypatch):
    # Reduced to 3 epochs of 3 seeds: a row per runner, each runner's
    # speed the trainer's seconds over its own.
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # benchmark_parts.
    bench = load_tool("benchmark")
    rows = bench.suite_cooling(1, [
        "--config.num_epochs=3", "--config.optimizer.boundaries_epochs="
        "(1.0,2.0)", "--config.cooling.seeds=(0,1,2)",
        "--config.model.width=16"])
    found = {row["variant"]: row for row in rows}
    assert list(found) == ["pipelines.cooling, cooling.runner=population",
                           "pipelines.cooling, cooling.runner=trainer"]
    trainer = found["pipelines.cooling, cooling.runner=trainer"]
    ours = found["pipelines.cooling, cooling.runner=population"]
    assert min(ours["process_seconds"], trainer["process_seconds"]) > 0
    assert ours["speedup"] == pytest.approx(
        trainer["process_seconds"] / ours["process_seconds"])
    assert "x the speed of the trainer runs" in bench.markdown(rows)
