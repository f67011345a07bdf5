r"""Speed of the trainer against plain Keras; knobs, input, memory.

    python tools/benchmark.py --output_dir=runs/benchmark    # CPU suites
    python tools/benchmark.py --suites=accelerator --output_dir=DIR  # GPU

Suites (`--suites`, comma-separated):

* `trainer`: the default digits model (ResNet-20 of width 8, 8x8x1, B =
  64, where host round trips count); the same ResNet-20 (CIFAR-style,
  32x32x3 synthetic data, B = 128, SGD with momentum) trained by the
  trainer's compiled loop (with
  `LinearScalingOptimizer` and its temperature logging, as every run) and by
  `keras.Model.fit` with a softmax head and `keras.optimizers.SGD`,
  alternated A B A B in this process after a warm-up, and then (the
  ResNet-20) each side alone in a fresh process of its own; then ResNet-50
  at 224x224 with a small batch and few steps. Images/sec of each, the ratio,
  its spread over the repeats, each side's training FLOP/s against this
  machine's measured float32 peak (a chain of 2048x2048 matrix products:
  the FLOP limit), and each side's cores busy and CPU time per
  image (TensorFlow sometimes runs a repeat of either side on about one of
  2 cores at the same CPU per image: the median over repeats discounts it).
* `knobs`: the default digits run (ResNet-20, width 8, B = 64, 8x8) with
  steps per host call 1, 10, 100, XLA off/on, float32 / mixed_bfloat16;
  threading in fresh processes (TensorFlow fixes its thread pools at start).
* `input`: ImageNet-style training preprocessing (JPEG decode + random-
  resized crop + flip + normalize to 224x224) on a generated folder of real
  JPEGs of ImageNet-like sizes, on one core and on all, against
  `keras.utils.image_dataset_from_directory` + Keras preprocessing layers.
* `memory`: peak resident memory of a short training run per model, each
  in its own process; and of the population engine with 1 and 4 BN-free
  ResNet-20 copies (32x32x3, B = 32 per copy): the cost of one more copy.
* `study`: trials of the plain-CNN eta0 study
  (`configs/tune_digits_cnn.py`; `--study_seeds` seeds, `--study_epochs`
  epochs, at B = 16 and 64) as one training-pipeline run per seed
  (`tune.runner = "trainer"`) and as one population of the seeds; seconds
  per seed and trial and the speed-up, in this process; then the
  population's images/s per copy against a lone Keras `fit` of the same
  CNN at B = 64; and milliseconds per step of 10 copies of a 7-conv CNN as
  the engine convolves them, as 10 `Conv2D` stacks side by side and as one
  `Conv2D(groups=10)`.
* `startup`: how long a command takes to answer `--help`, a config error
  and a bad flag (each a fresh `python -m pipelines.train` process, which
  parses its flags before TensorFlow loads), against `python -c "import
  tensorflow"` alone; alternated, median over the repeats.
* `jax`: the default study (`python -m pipelines.tune`) against the same
  work written in plain JAX (`tools/jax_study.py`), each a fresh process,
  alternated: whole-process seconds, the seconds spent training (the
  study's trials' own times; the JAX script's after its data are ready),
  and the FLOP limit: the study's FLOP (`benchmark_parts.study_flop`) at
  this machine's measured float32 peak.
* `equilibrium`: the default equilibrium experiment
  (`configs/equilibrium_digits.py`), each repeat a fresh process:
  whole-process seconds, the seconds its populations train, and the FLOP
  limit: its FLOP (`benchmark_parts.equilibrium_flop`) at this machine's
  measured float32 peak.
* `cooling`: the default cooling experiment (`configs/cooling_digits.py`)
  with its two runners, `cooling.runner=population` and `=trainer`, each
  a fresh `python -m pipelines.cooling` process on a new workdir,
  alternated: whole-process seconds, and how many times faster the
  populations are.
* `accelerator`: ResNet-50, synthetic ImageNet data, mixed_bfloat16, XLA,
  B = 256 per GPU; images/sec and model FLOP utilization (4.1 GMAC forward
  per image, x3 for training, 2 FLOP per MAC). Skips without a GPU.

Writes `benchmark.csv` (one row per measurement) and `benchmark.md` in
`--output_dir`; prints the Markdown. Numbers are whole-loop wall times after
warm-up (tracing excluded), medians over `--repeats`.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from benchmark_parts import (
    KerasFit,
    TrainerLoop,
    accelerator,
    alternate,
    base_config,
    equilibrium_flop,
    forward_macs,
    knob_config,
    make_jpeg_folder,
    markdown,
    matmul_peak,
    row,
    study_flop,
    study_suite,
    time_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_OUTPUT = flags.DEFINE_string("output_dir", None, "Where the CSV and the "
                              "Markdown table go; none: printed only.")
_SUITES = flags.DEFINE_list("suites", ["trainer", "knobs", "input", "memory",
                                       "study", "startup"],
                            "trainer, knobs, input, memory, study, startup, "
                            "jax, equilibrium, cooling, accelerator.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats per variant.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per ResNet-20 repeat.")
_R50_STEPS = flags.DEFINE_integer("r50_steps", 2, "Steps per ResNet-50 "
                                  "repeat (CPU).")
_R50_BATCH = flags.DEFINE_integer("r50_batch", 8, "ResNet-50 batch (CPU).")
_IMAGES = flags.DEFINE_integer("images", 96, "JPEG files for the input "
                               "suite.")
_THREADS = flags.DEFINE_list("threads", ["0", "0"], "TensorFlow intra- and "
                             "inter-op threads for this process (0: its "
                             "default).")
_STUDY_SEEDS = flags.DEFINE_integer("study_seeds", 10, "Seeds (copies) "
                                    "per trial in the study suite.")
_STUDY_EPOCHS = flags.DEFINE_integer("study_epochs", 10, "Epochs per trial "
                                     "in the study suite (the CNN study's "
                                     "budget).")
_MODE = flags.DEFINE_string("child", "", "Internal: run one measurement in "
                            "this process and print JSON.")

def side_row(shape, label, values, used):
    """A trainer-suite side's row: images/s, cores busy, CPU per image and
    FLOP/s; `shape` is `(model, batch, FLOP per image, peak FLOP/s)`."""
    model, batch, flop, peak = shape
    busy, cpu_ms = zip(*used, strict=True)
    return row("trainer", f"{model} B={batch} {label}", values,
               model=model, batch=batch, cores_busy=statistics.median(busy),
               cores_busy_min=min(busy), cores_busy_max=max(busy),
               cpu_ms_per_image=statistics.median(cpu_ms) / batch,
               gflops=statistics.median(values) * flop / 1e9,
               of_peak=statistics.median(values) * flop / peak)


def suite_trainer(repeats):
    # The FLOP limit: this machine's peak on large matrix products, against
    # which each side's training FLOP/s (6 x the forward MACs per image).
    peak = matmul_peak()
    rows = [{"suite": "trainer", "variant": "peak float32 matmul "
             "(2048x2048, all threads)", "peak_gflops": peak / 1e9}]
    for model, batch, size, steps in (
            ("digits resnet20 width 8", 64, 8, 100),
            ("resnet20", 128, 32, _STEPS.value),
            ("resnet50", _R50_BATCH.value, 224, _R50_STEPS.value)):
        if model.startswith("digits"):  # Small: host round trips count.
            config = knob_config()
        else:
            config = base_config(model, batch, size, steps)
        contenders = {
            "trainer": TrainerLoop(config),
            "keras_fit": KerasFit(config, jit_compile=False),
        }
        flop = 6 * forward_macs(contenders["trainer"].trainer.parts.model)
        usage = {}
        results = alternate(contenders, steps, repeats, usage)
        ratios = [a / b for a, b in zip(results["trainer"],
                                        results["keras_fit"], strict=True)]
        shape = (model, batch, flop, peak)
        for name, values in results.items():
            rows.append(side_row(shape, name, values, usage[name]))
        rows.append({"suite": "trainer", "variant": f"{model} ratio",
                     "ratio": statistics.median(ratios),
                     "min": min(ratios), "max": max(ratios),
                     "repeats": len(ratios), "model": model,
                     "batch": batch})
        if model == "resnet20":
            # The same two sides, each alone in a fresh process (one after
            # the other): whether sharing a process changes either's pace.
            for name in contenders:
                alone = child("trainer_side", {
                    "side": name, "model": model, "batch": batch,
                    "size": size, "steps": steps, "repeats": repeats})
                rows.append(side_row(shape, f"{name}, own process",
                                     alone["values"], alone["usage"]))
    return rows


def suite_knobs(repeats):
    import keras

    rows = []
    for precision in ("float32", "mixed_bfloat16"):
        for jit in (False, True):
            for per_call in (1, 10, 100):
                config = knob_config()
                config.precision = precision
                config.jit_compile = jit
                config.steps_per_loop = per_call
                config.strategy = "cpu"
                previous = keras.config.dtype_policy()
                try:
                    bench = TrainerLoop(config)
                    bench.measure(per_call)
                    values = [bench.measure(100) for _ in range(repeats)]
                finally:
                    keras.config.set_dtype_policy(previous)
                rows.append(row("knobs", f"{precision} xla={jit} "
                                f"steps_per_loop={per_call}", values,
                                precision=precision, jit=jit,
                                steps_per_loop=per_call,
                                traces=bench.traces()))
    for threads in ((1, 1), (2, 1), (2, 2), (0, 0)):
        result = child("threads", {"intra": threads[0],
                                   "inter": threads[1],
                                   "repeats": repeats})
        rows.append(row("knobs", f"threads intra={threads[0]} "
                        f"inter={threads[1]} (0: TensorFlow's default)",
                        result["values"]))
    return rows


def child(mode, arguments):
    """Runs `--child=mode` in a fresh process; returns its JSON and peak
    resident memory."""
    command = [sys.executable, os.path.abspath(__file__), f"--child={mode}",
               f"--output_dir={json.dumps(arguments)}"]
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=ROOT, timeout=1800)
    lines = [line for line in result.stdout.splitlines()
             if line.startswith("{")]
    if result.returncode or not lines:
        raise RuntimeError(f"benchmark child {mode} failed: "
                           f"{result.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_child(mode, arguments):
    """In the child process: one measurement, JSON on stdout."""
    import tensorflow as tf

    if mode == "threads":
        tf.config.threading.set_intra_op_parallelism_threads(
            arguments["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(
            arguments["inter"])
        config = knob_config()
        bench = TrainerLoop(config)
        bench.measure(11)
        values = [bench.measure(110) for _ in range(arguments["repeats"])]
        return {"values": values}
    if mode == "memory":
        model, batch, size = (arguments["model"], arguments["batch"],
                              arguments["size"])
        config = base_config(model, batch, size, arguments["steps"])
        from tf_temperature.training import trainer

        start = time.perf_counter()
        summary = trainer.train_and_evaluate(
            config, tempfile.mkdtemp(prefix="bench_memory_"), print_fn=None)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_mb": peak_kb / 1024, "seconds":
                time.perf_counter() - start, "step": summary["step"]}
    if mode == "population_memory":
        # S BN-free ResNet-20 copies (32x32x3, width 16) at B per copy:
        # a few engine steps, then the process's peak resident memory.
        import ml_collections

        from tf_temperature.studies import copy_models, population
        from tf_temperature.studies.eta0 import tasks

        copies, batch = arguments["copies"], arguments["batch"]
        network = copy_models.Network(ml_collections.ConfigDict(dict(
            depth=20, residual=True, width=16, shortcut="A",
            zero_init_residual=None)), (32, 32, 3), 10)
        model = network.population(copies)
        engine = population.Copies(model, tasks.mean_cross_entropy, 0.9)
        x = tf.random.normal([copies, batch, 32, 32, 3])
        y = tf.zeros([copies, batch], tf.int32)
        start = time.perf_counter()
        for _ in range(3):
            engine.step(x, y, 0.01)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_mb": peak_kb / 1024,
                "seconds": time.perf_counter() - start}
    if mode == "trainer_side":
        # One side of the trainer suite alone in this process.
        config = base_config(arguments["model"], arguments["batch"],
                             arguments["size"], arguments["steps"])
        side = arguments["side"]
        bench = (TrainerLoop(config) if side == "trainer"
                 else KerasFit(config, jit_compile=False))
        usage = {}
        values = alternate({side: bench}, arguments["steps"],
                           arguments["repeats"], usage)[side]
        return {"values": values, "usage": usage[side]}
    if mode == "equilibrium":
        # The default experiment in this process, the populations' training
        # (`Thermometer.run`) timed apart from the rest (set-up, the
        # statistics, the figures).
        import shutil

        from configs import equilibrium_digits
        from tf_temperature.studies.equilibrium import experiment, thermometer

        config = equilibrium_digits.get_config()
        # Fields to change (tests run a small experiment), JSON lists as
        # the config's tuples.
        config.update_from_flattened_dict({
            key: tuple(value) if isinstance(value, list) else value
            for key, value in arguments.items()})
        spent, run = [], thermometer.Thermometer.run

        def timed(self, *args, **kwargs):
            started = time.perf_counter()
            found = run(self, *args, **kwargs)
            spent.append(time.perf_counter() - started)
            return found

        thermometer.Thermometer.run = timed
        workdir = tempfile.mkdtemp(prefix="bench_equilibrium_")
        try:
            experiment.run_experiment(config, workdir, print_fn=None)
        finally:
            thermometer.Thermometer.run = run
            shutil.rmtree(workdir, ignore_errors=True)
        _, y = thermometer.digits(config.dataset.validation_fraction,
                                  config.seed)
        return {"training_seconds": sum(spent),
                "flop": equilibrium_flop(config, len(y))}
    if mode == "accelerator":
        return accelerator()
    raise ValueError(f"unknown child mode {mode!r}")


# The start-up suite's commands (after `python`), each a fresh process.
STARTUP_COMMANDS = {
    "pipelines.train --help": ["-m", "pipelines.train", "--help"],
    "pipelines.train, a config error": [
        "-m", "pipelines.train", "--config.batch_size=abc"],
    "pipelines.train, a bad flag": ["-m", "pipelines.train", "--nosuch=1"],
    "import tensorflow (for scale)": ["-c", "import tensorflow"],
}


def suite_equilibrium(repeats):
    # Each repeat a fresh process running the default experiment
    # (`--child=equilibrium`, what `python -m pipelines.equilibrium` runs,
    # without its printing): whole-process and training seconds against
    # the FLOP limit.
    peak = matmul_peak()
    whole, training, flop = [], [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = child("equilibrium", {})
        whole.append(time.perf_counter() - started)
        training.append(result["training_seconds"])
        flop = result["flop"]
    limit = flop / peak
    return [{"suite": "equilibrium", "variant": "peak float32 matmul "
             "(2048x2048, all threads)", "peak_gflops": peak / 1e9},
            {"suite": "equilibrium", "variant": "the default experiment",
             "process_seconds": statistics.median(whole), "min": min(whole),
             "max": max(whole), "repeats": repeats,
             "training_seconds": statistics.median(training), "flop": flop,
             "flop_limit_seconds": limit,
             "above_limit": statistics.median(training) / limit}]


def suite_cooling(repeats, flags_=()):
    """The cooling experiment's runners alternated, each repeat a fresh
    process per runner (`flags_`: more `--config.` flags, for a test)."""
    import shutil

    runners = ("population", "trainer")
    whole = {runner: [] for runner in runners}
    for _ in range(repeats):
        for runner in runners:
            scratch = tempfile.mkdtemp(prefix="bench_cooling_")
            try:
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pipelines.cooling",
                                f"--workdir={scratch}/run",
                                f"--config.cooling.runner={runner}",
                                *flags_], cwd=ROOT, capture_output=True,
                               check=True)
                whole[runner].append(time.perf_counter() - started)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    slow = statistics.median(whole["trainer"])
    return [{"suite": "cooling",
             "variant": f"pipelines.cooling, cooling.runner={runner}",
             "process_seconds": statistics.median(whole[runner]),
             "min": min(whole[runner]), "max": max(whole[runner]),
             "repeats": repeats,
             "speedup": slow / statistics.median(whole[runner]),
             "speed_of": "the trainer runs"}
            for runner in runners]


def suite_startup(repeats):
    times = {name: [] for name in STARTUP_COMMANDS}
    for _ in range(repeats):
        for name, command in STARTUP_COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, *command], cwd=ROOT,
                           capture_output=True, check=False)
            times[name].append(time.perf_counter() - started)
    return [{"suite": "startup", "variant": name,
             "process_seconds": statistics.median(values),
             "min": min(values), "max": max(values), "repeats": repeats}
            for name, values in times.items()]


def suite_study(repeats):
    del repeats  # One pass: the trainer runs take most of the suite.
    return study_suite(_STUDY_SEEDS.value, _STUDY_EPOCHS.value)


def suite_jax(repeats):
    import importlib.util
    import shutil

    import pandas as pd

    if importlib.util.find_spec("jax") is None:
        print("jax: skipped (tools/jax_study.py needs JAX: pip install -e "
              "'.[jax]')")
        return []
    peak = matmul_peak()
    names = ("pipelines.tune (default study)", "tools/jax_study.py")
    whole = {name: [] for name in names}
    training = {name: [] for name in names}
    flop = None
    for _ in range(repeats):
        scratch = tempfile.mkdtemp(prefix="bench_jax_")
        for name, command in zip(names, (
                ["-m", "pipelines.tune", f"--workdir={scratch}/study"],
                ["tools/jax_study.py", f"--output={scratch}/jax.json"]),
                strict=True):
            started = time.perf_counter()
            subprocess.run([sys.executable, *command], cwd=ROOT,
                           capture_output=True, check=True)
            whole[name].append(time.perf_counter() - started)
        trials = pd.read_csv(os.path.join(scratch, "study", "trials.csv"))
        flop = study_flop(trials)
        # A trial's wall_time is on each of its seeds' rows.
        training[names[0]].append(trials.drop_duplicates(
            ["mode", "trial"])["wall_time"].sum())
        with open(os.path.join(scratch, "jax.json")) as file:
            training[names[1]].append(json.load(file)["training_seconds"])
        shutil.rmtree(scratch, ignore_errors=True)
    limit = flop / peak
    return [{"suite": "jax", "variant": "peak float32 matmul (2048x2048, "
             "all threads)", "peak_gflops": peak / 1e9}] + [
            {"suite": "jax", "variant": name,
             "process_seconds": statistics.median(whole[name]),
             "min": min(whole[name]), "max": max(whole[name]),
             "repeats": repeats,
             "training_seconds": statistics.median(training[name]),
             "flop": flop, "flop_limit_seconds": limit,
             "above_limit": statistics.median(training[name]) / limit}
            for name in names]


def suite_memory():
    rows = []
    for model, batch, size, steps in (("resnet20", 128, 32, 5),
                                      ("resnet50", _R50_BATCH.value, 224, 2)):
        result = child("memory", {"model": model, "batch": batch,
                                  "size": size, "steps": steps})
        rows.append({"suite": "memory", "variant": f"{model} B={batch}",
                     "peak_mb": result["peak_mb"], "model": model,
                     "batch": batch,
                     "seconds": result["seconds"]})
    # The population engine: what one more ResNet-20 copy costs (BUILD_NOTES
    # sizes a population to an accelerator's memory from it).
    peaks = {}
    for copies in (1, 4):
        peaks[copies] = child("population_memory", {
            "copies": copies, "batch": 32})["peak_mb"]
        rows.append({"suite": "memory", "variant": f"population of {copies}"
                     " BN-free ResNet-20 (32x32x3), B=32 per copy",
                     "peak_mb": peaks[copies]})
    rows.append({"suite": "memory", "variant": "one more ResNet-20 copy, "
                 "B=32 (difference / 3)",
                 "peak_mb": (peaks[4] - peaks[1]) / 3})
    return rows


def suite_input(repeats):
    import keras
    import tensorflow as tf

    from configs import imagenet_resnet50
    from tf_temperature.training import input_pipeline, sources

    directory = tempfile.mkdtemp(prefix="bench_jpegs_")
    make_jpeg_folder(directory, _IMAGES.value)
    cores = os.cpu_count() or 1
    rows = []
    batch = min(32, _IMAGES.value)
    for threads, label in ((1, "1 core"), (0, f"all {cores} cores")):
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.deterministic = False
        config = imagenet_resnet50.get_config().dataset
        with config.unlocked():
            config.name = "folder"
            config.train_dir = directory
            config.eval_dir = directory
        source = sources.make_source(config, seed=0)
        pipeline = input_pipeline.InputPipeline(source, config, batch,
                                                seed=0)
        ours = pipeline.train_dataset(tf.distribute.InputContext(), epoch=0)
        ours = ours.with_options(options)
        values = time_dataset(ours, _IMAGES.value // batch * batch, repeats)
        per_core = cores if threads == 0 else 1
        rows.append(row("input", f"tf_temperature folder pipeline, {label}",
                        values, per_core=statistics.median(values)
                        / per_core))

        augment = keras.Sequential([
            keras.layers.RandomCrop(224, 224),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.Normalization(mean=[123.7, 116.3, 103.5],
                                       variance=[58.4**2, 57.1**2,
                                                 57.4**2]),
        ])
        theirs = keras.utils.image_dataset_from_directory(
            directory, image_size=(256, 256), batch_size=batch,
            shuffle=True, seed=0, verbose=False)
        theirs = theirs.map(
            lambda x, y, layers=augment: (layers(x, training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE)
        theirs = theirs.prefetch(tf.data.AUTOTUNE).with_options(options)
        values = time_dataset(theirs, _IMAGES.value, repeats)
        rows.append(row("input", "keras image_dataset_from_directory + "
                        f"RandomCrop/RandomFlip/Normalization, {label}",
                        values, per_core=statistics.median(values)
                        / per_core))
    return rows


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    if _MODE.value:
        print(json.dumps(run_child(_MODE.value,
                                   json.loads(_OUTPUT.value))))
        return 0
    for flag in (_REPEATS, _STEPS, _R50_STEPS, _R50_BATCH, _IMAGES):
        if flag.value < 1:
            print(f"error: `--{flag.name}` must be an integer >= 1. "
                  f"Received: {flag.value}", file=sys.stderr)
            return 2
    known = {"trainer", "knobs", "input", "memory", "study", "startup",
             "jax", "equilibrium", "cooling", "accelerator"}
    unknown = set(_SUITES.value) - known
    if unknown:
        print(f"error: `--suites` must be among {', '.join(sorted(known))}."
              f" Received: {','.join(_SUITES.value)}", file=sys.stderr)
        return 2
    import pandas as pd
    import tensorflow as tf

    intra, inter = (int(t) for t in _THREADS.value)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from tf_temperature.runtime import progress

    suites = _SUITES.value
    # Seconds per suite on 2 cores with AVX-512: `study` took 178 s and
    # `memory` 66 s on an Intel Xeon (docs/PERFORMANCE.md); on an AMD EPYC,
    # with 3 repeats, `trainer` 96 s, `equilibrium` 155 s, `jax` 149 s and
    # `cooling` 221 s, the others about 3 minutes together (their split is
    # rough). They weigh the suites for the time left, which then follows
    # this machine's pace.
    typical = {"trainer": 100, "knobs": 70, "input": 30, "memory": 66,
               "study": 178, "startup": 25, "jax": 150, "equilibrium": 155,
               "cooling": 220, "accelerator": 120}
    costs = [typical[suite] for suite in suites]
    print(f"benchmark: {len(suites)} suite(s) {', '.join(suites)}, "
          f"{_REPEATS.value} repeat(s); about "
          f"{progress.duration(sum(costs))} on 2 AVX-512 cores (AVX2: "
          "several times longer); one line per suite")
    meter = progress.Progress(costs)
    rows = []
    for suite in suites:
        started = time.perf_counter()
        if suite == "trainer":
            rows += suite_trainer(_REPEATS.value)
        elif suite == "knobs":
            rows += suite_knobs(_REPEATS.value)
        elif suite == "input":
            rows += suite_input(_REPEATS.value)
        elif suite == "memory":
            rows += suite_memory()
        elif suite == "study":
            rows += suite_study(_REPEATS.value)
        elif suite == "startup":
            rows += suite_startup(_REPEATS.value)
        elif suite == "jax":
            rows += suite_jax(_REPEATS.value)
        elif suite == "equilibrium":
            rows += suite_equilibrium(_REPEATS.value)
        elif suite == "cooling":
            rows += suite_cooling(_REPEATS.value)
        else:
            result = child("accelerator", {})
            print(json.dumps(result, indent=1))
            if "skipped" not in result:
                rows.append({"suite": "accelerator",
                             "variant": f"{result['device']} x"
                             f"{result['gpus']} ResNet-50 bf16 XLA "
                             f"B={result['batch']}",
                             "images_per_sec": result["images_per_sec"],
                             "min": min(result["values"]),
                             "max": max(result["values"]), "repeats": 3,
                             "tflops": result["tflops"]})
        seconds = time.perf_counter() - started
        meter.step(typical[suite], seconds,
                   f"{suite}: {progress.duration(seconds)}")
    text = markdown(rows)
    print(text)
    written = "nothing written (--output_dir=DIR writes the CSV and table)"
    if _OUTPUT.value:
        os.makedirs(_OUTPUT.value, exist_ok=True)
        pd.DataFrame(rows).to_csv(
            os.path.join(_OUTPUT.value, "benchmark.csv"), index=False)
        with open(os.path.join(_OUTPUT.value, "benchmark.md"), "w") as file:
            file.write(text + "\n")
        written = (f"wrote benchmark.csv and benchmark.md in "
                   f"{_OUTPUT.value}")
    print(f"benchmark done in "
          f"{progress.duration(time.perf_counter() - meter.started)}: "
          f"{written}")
    return 0


if __name__ == "__main__":
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
