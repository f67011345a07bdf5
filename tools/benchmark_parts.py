"""What `tools/benchmark.py` times: configs, contenders, data, helpers.

Kept apart from the suites so that each file stays one concern; the
trainer is driven through its public API (`trainer.prepare`,
`Trainer.train_steps`).
"""

import os
import statistics
import tempfile
import time

# ResNet-50 forward: ~4.1 GMAC per 224x224 image (He et al. 2016, Table 1).
R50_FLOPS_PER_IMAGE = 4.1e9 * 2 * 3


def base_config(model, batch, image_size, steps):
    """A training config on synthetic data: `model` is "resnet20" or
    "resnet50"."""
    from configs import digits_resnet, imagenet_resnet50

    if model == "resnet50":
        config = imagenet_resnet50.get_config()
        config.dataset.augment = "none"
    else:
        config = digits_resnet.get_config()
        config.model.depth, config.model.width = 20, 16
    config.dataset.name = "synthetic"
    config.dataset.image_size = image_size
    config.dataset.channels = 3
    config.dataset.num_classes = 1000 if model == "resnet50" else 10
    config.dataset.num_train = batch * steps
    config.dataset.num_eval = batch
    config.dataset.shuffle_buffer = 256
    config.batch_size = batch
    config.precision = "float32"
    config.strategy = "cpu"
    config.optimizer.warmup = "none"
    config.optimizer.decay = "constant"
    config.optimizer.boundaries_epochs = ()
    config.num_epochs = 1
    config.quiet = True
    return config


class TrainerLoop:
    """The trainer's own compiled loop (`Trainer.train_steps`), timed."""

    def __init__(self, config):
        from tf_temperature.training import trainer

        self.workdir = tempfile.mkdtemp(prefix="bench_trainer_")
        self.trainer = trainer.prepare(config, self.workdir, print_fn=None)
        self.config = config

    def measure(self, steps):
        start = time.perf_counter()
        self.trainer.train_steps(steps)  # Returns floats: waits for the end.
        return steps * self.config.batch_size / (time.perf_counter() - start)

    def traces(self):
        return self.trainer.train_loop.experimental_get_tracing_count()


class KerasFit:
    """The same model with a softmax head in `model.fit`."""

    def __init__(self, config, jit_compile):
        import keras
        import numpy as np
        import tensorflow as tf

        from tf_temperature.models import build_model

        keras.utils.set_random_seed(0)
        size, channels = config.dataset.image_size, config.dataset.channels
        logits = build_model(config.model, (size, size, channels),
                                     config.dataset.num_classes)
        probabilities = keras.layers.Activation("softmax", dtype="float32")(
            logits.output)
        self.model = keras.Model(logits.input, probabilities)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
        rng = np.random.default_rng(0)
        images = rng.random((64, size, size, channels), dtype=np.float32)
        labels = (np.arange(64) % config.dataset.num_classes).astype("int32")
        self.data = (tf.data.Dataset.from_tensor_slices((images, labels))
                     .repeat().batch(config.batch_size, drop_remainder=True)
                     .prefetch(tf.data.AUTOTUNE))
        self.batch = config.batch_size

    def measure(self, steps):
        start = time.perf_counter()
        self.model.fit(self.data, epochs=1, steps_per_epoch=steps, verbose=0,
                       shuffle=False)
        return steps * self.batch / (time.perf_counter() - start)


def alternate(contenders, steps, repeats, usage=None):
    """Warm-up, then A B A B ...: {name: [images/sec per repeat]}.

    With a dict `usage`, also `usage[name]`: `(cores busy, CPU-ms per
    batch)` per repeat, from the process's CPU time over the wall time.
    On 2 cores TensorFlow now and then runs a whole repeat of either side
    on about one core at the same CPU per image (a dip, not a slower
    side), which the cores-busy column shows.
    """
    for bench in contenders.values():
        bench.measure(min(steps, 2))  # Traces and warms the caches.
    results = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, bench in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name].append(bench.measure(steps))
            wall, cpu = (time.perf_counter() - wall,
                         time.process_time() - cpu)
            if usage is not None:
                usage.setdefault(name, []).append(
                    (cpu / wall, 1000 * cpu / steps))
    return results


def forward_macs(model):
    """Multiply-accumulates of one example's forward pass through `model`'s
    `Conv2D` and `Dense` layers (nested models included); batch norm,
    additions and activations, a few percent more, are left out. Training
    costs about 3 forward passes (the backward pass two), 2 FLOP per MAC:
    `6 * forward_macs(model)` FLOP per image."""
    import math

    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            total += height * width * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(layer.output.shape[1:-1])
            total += positions * math.prod(layer.kernel.shape)
    return total


def matmul_peak(size=2048, chain=10, repeats=5):
    """This machine's float32 FLOP/s on large matrix products (TensorFlow,
    all its threads): a chain of `chain` products of `size` x `size`
    matrices in one compiled function, median over `repeats` after a
    warm-up. The limit a training step's FLOP are measured against."""
    import tensorflow as tf

    a = tf.random.normal((size, size), seed=0)
    b = tf.random.normal((size, size), seed=1) / size ** 0.5

    @tf.function
    def products(c):
        for _ in range(chain):
            c = tf.matmul(c, b)  # b / sqrt(size) keeps the scale.
        return tf.reduce_sum(c)

    float(products(a))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(products(a))
        rates.append(2 * size ** 3 * chain / (time.perf_counter() - start))
    return statistics.median(rates)


def row(suite, variant, values, **extra):
    return {"suite": suite, "variant": variant,
            "images_per_sec": statistics.median(values),
            "min": min(values), "max": max(values), "repeats": len(values),
            **extra}


def knob_config():
    """The default digits run's model and batch (ResNet-20 of width 8,
    B = 64, 8x8x1) on synthetic data with long epochs (300 steps), so that
    100 steps fit in one host call."""
    from configs import digits_resnet

    config = digits_resnet.get_config()
    config.quiet, config.strategy = True, "cpu"
    config.dataset.name = "synthetic"
    config.dataset.channels = 1
    config.dataset.num_train = 64 * 300
    config.dataset.num_eval = 64
    config.dataset.shuffle_buffer = 256
    return config


def make_jpeg_folder(directory, count):
    """`count` JPEGs of ImageNet-like sizes (shorter side 300-500 pixels,
    quality 90) with smooth random content, in 4 class folders."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for index in range(count):
        height, width = (int(rng.integers(300, 501)),
                         int(rng.integers(350, 640)))
        small = rng.random((height // 16 + 1, width // 16 + 1, 3))
        image = tf.image.resize(small[None], (height, width))[0]
        image = tf.cast(tf.clip_by_value(
            image * 255 + rng.normal(0, 8, (height, width, 3)), 0, 255),
            tf.uint8)
        folder = os.path.join(directory, f"class{index % 4}")
        os.makedirs(folder, exist_ok=True)
        tf.io.write_file(os.path.join(folder, f"{index:04d}.jpg"),
                         tf.io.encode_jpeg(image, quality=90))


def time_dataset(dataset, images, repeats):
    values = []
    for _ in range(repeats):
        start = time.perf_counter()
        seen = 0
        for batch in dataset:
            seen += int(batch[0].shape[0])
        values.append(seen / (time.perf_counter() - start))
    assert seen == images or seen > 0
    return values


def accelerator():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"skipped": "no GPU visible to TensorFlow"}
    batch = 256 * len(gpus)
    config = base_config("resnet50", batch, 224, 30)
    config.strategy = "auto"
    config.precision = "mixed_bfloat16"
    config.jit_compile = len(gpus) == 1
    config.steps_per_loop = 10
    bench = TrainerLoop(config)
    started = time.perf_counter()
    bench.measure(10)  # Compiles.
    compile_seconds = time.perf_counter() - started
    values = [bench.measure(30) for _ in range(3)]
    best = statistics.median(values)
    name = tf.config.experimental.get_device_details(gpus[0]).get(
        "device_name", "GPU")
    return {"device": name, "gpus": len(gpus), "batch": batch,
            "images_per_sec": best, "values": values,
            "compile_seconds": compile_seconds,
            "tflops": best * R50_FLOPS_PER_IMAGE / 1e12}


def markdown(rows):
    """The rows as a Markdown table (pandas' `to_markdown`)."""
    import pandas as pd

    table = []
    for r in rows:
        value = r.get("images_per_sec")
        if "ms_per_step" in r:
            table.append([r["suite"], r["variant"], "", "", "",
                          f"{r['ms_per_step']:.1f} ms per step"])
            continue
        if "seconds_per_seed_trial" in r:
            table.append([r["suite"], r["variant"], "", "", "",
                          f"{r['seconds_per_seed_trial']:.3f} s per seed "
                          f"and trial, {r['speedup']:.1f}x the first"])
            continue
        if "training_seconds" in r:
            table.append([r["suite"], r["variant"],
                          f"{r['process_seconds']:.1f} s", f"{r['min']:.1f}",
                          f"{r['max']:.1f}",
                          f"whole process; training {r['training_seconds']:.1f}"
                          f" s, {r['above_limit']:.1f}x the FLOP limit "
                          f"{r['flop_limit_seconds']:.1f} s"])
            continue
        if "process_seconds" in r:
            table.append([r["suite"], r["variant"],
                          f"{r['process_seconds']:.2f} s", f"{r['min']:.2f}",
                          f"{r['max']:.2f}", "whole process" + (
                              f", {r['speedup']:.2f}x the speed of "
                              f"{r['speed_of']}" if "speed_of" in r
                              else "")])
            continue
        if value is None and "ratio" in r:
            table.append([r["suite"], r["variant"], f"ratio {r['ratio']:.3f}",
                          f"{r['min']:.3f}", f"{r['max']:.3f}",
                          "trainer / keras fit"])
            continue
        if "peak_gflops" in r:
            table.append([r["suite"], r["variant"], "", "", "",
                          f"{r['peak_gflops']:.1f} GFLOP/s (the limit)"])
            continue
        if value is None:
            table.append([r["suite"], r["variant"], "", "", "",
                          f"peak RSS {r['peak_mb']:.0f} MB"])
            continue
        other = []
        if "per_core" in r:
            other.append(f"{r['per_core']:.1f} images/sec per core")
        if "traces" in r:
            other.append(f"{r['traces']} trace(s)")
        if "gflops" in r:
            other.append(f"{r['gflops']:.1f} GFLOP/s, "
                         f"{r['of_peak']:.0%} of the measured peak")
        if "cores_busy" in r:
            other.append(f"{r['cores_busy']:.2f} cores busy "
                         f"({r['cores_busy_min']:.2f}-"
                         f"{r['cores_busy_max']:.2f}), "
                         f"{r['cpu_ms_per_image']:.2f} CPU-ms per image")
        table.append([r["suite"], r["variant"], f"{value:,.1f}",
                      f"{r['min']:,.1f}", f"{r['max']:,.1f}",
                      "; ".join(other)])
    frame = pd.DataFrame(table, columns=[
        "suite", "variant", "images/sec (median)", "min", "max", "other"])
    return frame.to_markdown(index=False,
                             colalign=("left", "left", "right", "right",
                                       "right", "left"))


def convolution_mechanisms(copies=10, batch=32, width=8):
    """Milliseconds per training step of `copies` copies of a 7-conv CNN
    (8x8x1 inputs, He et al.'s plain-8 body) three ways, each one graph:
    the population engine's `PopulationConv2D` (patches x batched matmul,
    XLA), `copies` Keras `Conv2D` stacks side by side, and one
    `Conv2D(groups=copies)` stack on the copies stacked along channels."""
    import keras
    import tensorflow as tf

    from tf_temperature.studies import copy_models

    body = [(width, 1), (width, 1), (width, 1), (2 * width, 2),
            (2 * width, 1), (4 * width, 2), (4 * width, 1)]
    images = tf.random.normal([copies, batch, 8, 8, 1])

    def engine():
        inputs = keras.Input((batch, 8, 8, 1), batch_size=copies)
        x = copy_models.MergeCopies()(inputs)
        for filters, strides in body:
            x = keras.layers.ReLU()(copy_models.PopulationConv2D(
                filters, 3, copies, strides)(x))
        return keras.Model(inputs, x), images, True

    def side_by_side():
        inputs = keras.Input((8, 8, copies))
        outputs = []
        for c in range(copies):
            x = inputs[..., c:c + 1]
            for filters, strides in body:
                x = keras.layers.Conv2D(filters, 3, strides, "same",
                                        activation="relu")(x)
            outputs.append(x)
        return (keras.Model(inputs, keras.layers.Concatenate()(outputs)),
                tf.transpose(images[..., 0], [1, 2, 3, 0]), False)

    def grouped():
        inputs = keras.Input((8, 8, copies))
        x = inputs
        for filters, strides in body:
            x = keras.layers.Conv2D(copies * filters, 3, strides, "same",
                                    groups=copies, activation="relu")(x)
        return (keras.Model(inputs, x),
                tf.transpose(images[..., 0], [1, 2, 3, 0]), False)

    results = {}
    for name, make, steps in (("engine (patches x matmul, XLA)", engine, 50),
                              ("Conv2D stacks side by side", side_by_side,
                               50),
                              ("one Conv2D(groups=copies)", grouped, 3)):
        model, x, jit = make()
        optimizer = keras.optimizers.SGD(0.01)

        @tf.function(jit_compile=jit)
        def step(model=model, x=x, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x, training=True)))
            optimizer.apply(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables)

        step()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        results[name] = 1000 * (time.perf_counter() - started) / steps
    return results


def study_suite(seeds, epochs):
    """The population engine against the trainer, on the plain-CNN study.

    Trials of `configs/tune_digits_cnn.py` (`seeds` seeds, `epochs`
    epochs, at B = 16 and 64): one training-pipeline run
    per seed (`tune.runner = "trainer"`, what a study of any model costs)
    against the seeds as one population (`tune.runner = "population"`),
    seconds per seed and trial after one warm-up trial each; then the
    population's images/s per copy against a lone Keras `fit` of the same
    model (`copy_models.Network.lone`, Keras SGD) at B = 64.
    """
    import keras
    import numpy as np

    from configs import tune_digits_cnn
    from tf_temperature.studies.eta0 import runners

    config = tune_digits_cnn.get_config()
    config.tune.seeds = tuple(range(seeds))
    config.tune.epochs = epochs
    trials = [(16, 2.0**-7), (64, 2.0**-8)]

    def per_seed_trial(runner):
        for batch, eta0 in trials:  # Warm-up: one trace per B.
            runner.run(tempfile.mkdtemp(prefix="bench_study_"), batch, eta0,
                       1)
        started = time.perf_counter()
        for batch, eta0 in trials:
            runner.run(tempfile.mkdtemp(prefix="bench_study_"), batch, eta0,
                       epochs)
        return (time.perf_counter() - started) / (len(trials) * seeds)

    rows, results = [], {}
    for name, runner_name in (
            (f"CNN: {seeds} training-pipeline runs, one per seed", "trainer"),
            (f"CNN: population of {seeds} copies", "population")):
        variant = config.copy_and_resolve_references()
        variant.tune.runner = runner_name
        runner = runners.make_runner(variant)
        results[name] = per_seed_trial(runner)
    old = next(iter(results.values()))
    for name, seconds in results.items():
        rows.append({"suite": "study", "variant": name,
                     "seconds_per_seed_trial": seconds,
                     "speedup": old / seconds})

    # Images/s per copy at B = 64 against a lone Keras model's fit.
    batch = 64
    engine = runner.population()  # The population runner's, traced.
    engine.run(batch, batch * 2.0**-8, 1)
    values = []
    for _ in range(3):
        started = time.perf_counter()
        steps = engine.run(batch, batch * 2.0**-8, epochs)["steps"]
        values.append(steps * batch / (time.perf_counter() - started))
    rows.append({"suite": "study", "variant": f"CNN population of {seeds}"
                 f", B={batch}, images/s per copy",
                 "images_per_sec": statistics.median(values),
                 "min": min(values), "max": max(values)})
    task = engine.task
    lone = task.architecture.lone()
    lone.compile(keras.optimizers.SGD(batch * 2.0**-8),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = task.x_train, task.y_train.astype(np.int32)
    lone.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    values = []
    for _ in range(3):
        started = time.perf_counter()
        lone.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        values.append(len(y) // batch * batch * epochs
                      / (time.perf_counter() - started))
    rows.append({"suite": "study", "variant": f"CNN lone Keras fit, B={batch}"
                 ", images/s", "images_per_sec": statistics.median(values),
                 "min": min(values), "max": max(values)})
    # Why the engine convolves as it does: three ways to put 10 CNNs in
    # one graph.
    for name, ms in convolution_mechanisms().items():
        rows.append({"suite": "study", "variant": f"10 copies of a 7-conv "
                     f"CNN, B=32: {name}", "ms_per_step": ms})
    return rows


# The digits perceptron of the default study: 64 -> 64 -> 10.
STUDY_MACS = 64 * 64 + 64 * 10


def study_flop(trials, train_examples=1024, eval_examples=773,
               evals_per_epoch=4):
    """FLOP of the default study's trials (`trials.csv`, one row per copy):
    training 6 x MACs per example; a recorded (fine) copy also evaluates
    `evals_per_epoch` times per epoch; every copy ends with one pass over
    both splits (2 x MACs per example)."""
    flop = 0.0
    for row in trials.itertuples():
        flop += 6 * STUDY_MACS * row.steps * row.batch_size
        per_epoch = train_examples // row.batch_size
        if row.stage == "fine":
            evals = row.steps // max(1, per_epoch // evals_per_epoch)
            flop += 2 * STUDY_MACS * eval_examples * evals
        flop += 2 * STUDY_MACS * (train_examples + eval_examples)
    return flop


def equilibrium_flop(config, num_train):
    """FLOP of the equilibrium experiment's populations
    (`experiment.populations`): every copy trains 6 x the perceptron's MACs
    per example, and once per epoch measures its expected loss over the
    whole training set (2 x MACs per example; the label-redraw average
    reuses those logits)."""
    from tf_temperature.studies.equilibrium import experiment

    widths = (64, *(config.model.width,) * config.model.depth, 10)
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    flop = 0.0
    for batch, (_, steps, copies) in experiment.populations(
            config, num_train).items():
        measurements = steps // (num_train // batch)
        flop += copies * (6 * macs * batch * steps
                          + 2 * macs * num_train * measurements)
    return flop
