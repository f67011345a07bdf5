"""Input pipelines: sources, per-epoch determinism, sharding, padding."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import tiny_config

from tf_temperature.training import input_pipeline, sources


def make(config=None, batch=32, image_dtype="float32"):
    config = config or tiny_config()
    source = sources.make_source(config.dataset, config.seed)
    return input_pipeline.InputPipeline(source, config.dataset, batch,
                                        seed=0, image_dtype=image_dtype)


def single_context():
    return tf.distribute.InputContext(1, 0, 1)


def batches(dataset):
    return [tuple(t.numpy() for t in b) for b in dataset]


def test_digits_split_is_fixed_and_disjoint():
    (x1, y1), (xv1, _) = sources.load_digits_split(0.2, seed=0)
    (x2, _), (xv2, _) = sources.load_digits_split(0.2, seed=0)
    assert x1.shape == (1438, 8, 8, 1) and xv1.shape == (359, 8, 8, 1)
    np.testing.assert_array_equal(xv1, xv2)
    np.testing.assert_array_equal(x1, x2)
    assert set(np.unique(y1)) == set(range(10))


def test_train_batches_have_static_shapes_and_the_policy_dtype():
    pipeline = make(image_dtype="bfloat16")
    dataset = pipeline.train_dataset(single_context(), epoch=0)
    images, labels = dataset.element_spec
    assert images.shape == (32, 8, 8, 1)  # drop_remainder: static.
    assert images.dtype == tf.bfloat16
    assert labels.shape == (32,)
    assert len(batches(dataset)) == pipeline.steps_per_epoch == 1438 // 32


def test_epochs_are_deterministic_and_differ():
    pipeline = make(tiny_config(**{"dataset.augment": "cifar"}))
    first = batches(pipeline.train_dataset(single_context(), epoch=0))
    again = batches(pipeline.train_dataset(single_context(), epoch=0))
    other = batches(pipeline.train_dataset(single_context(), epoch=1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(first[0][1], other[0][1])


@pytest.mark.parametrize("global_seed", [None, 0, 5])
def test_a_tensor_seeded_shuffle_is_datasets_shuffle(global_seed):
    # `_shuffled` takes the epoch's seed as a tensor (inside `flat_map`);
    # it must give `Dataset.shuffle`'s order for that seed, whatever the
    # global seed (0 is the one `shuffle` itself cannot take as a tensor).
    from tensorflow.python.eager import context

    saved = context.global_seed()  # Other tests' runs rely on one.
    tf.random.set_seed(global_seed)
    try:
        check_tensor_seeded_shuffle()
    finally:
        tf.random.set_seed(saved)


def check_tensor_seeded_shuffle():
    data = tf.data.Dataset.range(60).map(lambda x: (x, x * 2))
    seeds = [0, 1_009 * 3 + 1, 2**31 - 1, 2**33 + 4]
    expected = [list(data.shuffle(25, seed=seed,
                                  reshuffle_each_iteration=False)
                     .map(lambda x, y: x).as_numpy_iterator())
                for seed in seeds]
    graph_seed = tf.compat.v1.random.get_seed(1)[0]
    found = tf.data.Dataset.from_tensor_slices(
        tf.constant(seeds, tf.int64)).flat_map(
        lambda seed: input_pipeline._shuffled(data, 25, seed, graph_seed))
    assert list(found.map(lambda x, y: x).as_numpy_iterator()) == [
        x for order in expected for x in order]
    assert expected[0] != expected[1]  # The seed matters.


def test_a_dataset_of_several_epochs_is_the_epochs_one_after_another():
    # The trainer's one dataset per phase: the batches of each epoch's own
    # dataset, from the first epoch's `skip_steps` on, augmentation and
    # label noise included.
    pipeline = make(tiny_config(**{"dataset.augment": "cifar",
                                   "dataset.label_noise": 0.2}), batch=128)
    each = [*batches(pipeline.train_dataset(single_context(), 2,
                                            skip_steps=4)),
            *batches(pipeline.train_dataset(single_context(), 3)),
            *batches(pipeline.train_dataset(single_context(), 4))]
    spanning = batches(pipeline.train_dataset(single_context(), 2,
                                              skip_steps=4, epochs=3))
    assert len(spanning) == 3 * pipeline.steps_per_epoch - 4 == len(each)
    for a, b in zip(each, spanning, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_skip_resumes_at_the_same_batch():
    pipeline = make(tiny_config(**{"dataset.augment": "cifar"}))
    full = batches(pipeline.train_dataset(single_context(), epoch=2))
    resumed = batches(pipeline.train_dataset(single_context(), epoch=2,
                                             skip_steps=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_eval_counts_every_example_once():
    pipeline = make(batch=64)
    dataset = pipeline.eval_dataset(single_context())
    rows = batches(dataset)
    assert len(rows) == pipeline.eval_steps == 6  # ceil(359 / 64).
    weights = np.concatenate([r[2] for r in rows])
    labels = np.concatenate([r[1] for r in rows])
    assert weights.sum() == 359
    _, (_, y_val) = sources.load_digits_split(0.2, seed=0)
    np.testing.assert_array_equal(np.sort(labels[weights > 0]),
                                  np.sort(y_val))


def test_mirrored_replicas_split_the_global_batch(two_cpu_strategy):
    pipeline = make(batch=32)
    dataset = pipeline.distributed_train(two_cpu_strategy, epoch=0)
    images, labels = next(iter(dataset))
    parts = two_cpu_strategy.experimental_local_results(images)
    assert [p.shape[0] for p in parts] == [16, 16]
    # The two halves are the single-device batch, in order.
    single = batches(pipeline.train_dataset(single_context(), epoch=0))[0]
    np.testing.assert_array_equal(np.concatenate(parts), single[0])
    evaluation = pipeline.distributed_eval(two_cpu_strategy)
    total = sum(float(tf.reduce_sum(w)) for batch in evaluation
                for w in two_cpu_strategy.experimental_local_results(
                    batch[2]))
    assert total == 359


def test_synthetic_source():
    config = tiny_config(**{"dataset.name": "synthetic",
                            "dataset.image_size": 32, "dataset.channels": 3,
                            "dataset.num_classes": 7,
                            "dataset.num_train": 256,
                            "dataset.num_eval": 64})
    pipeline = make(config, batch=64)
    assert pipeline.steps_per_epoch == 4
    images, labels = next(iter(pipeline.train_dataset(single_context(), 0)))
    assert images.shape == (64, 32, 32, 3)
    assert int(tf.reduce_max(labels)) < 7


def test_tfds_source_with_mock_data():
    config = tiny_config(**{"dataset.name": "tfds",
                            "dataset.tfds_name": "cifar10",
                            "dataset.image_size": 32, "dataset.channels": 3,
                            "dataset.augment": "cifar",
                            "dataset.flip": True})
    with tfds.testing.mock_data(num_examples=40):
        pipeline = make(config, batch=8)
        assert pipeline.source.num_classes == 10
        assert pipeline.source.num_train == 40
        images, _ = next(iter(pipeline.train_dataset(single_context(), 0)))
    assert images.shape == (8, 32, 32, 3)


def test_tfds_imagenet_style_reads_encoded_images():
    config = tiny_config(**{"dataset.name": "tfds",
                            "dataset.tfds_name": "imagenette",
                            "dataset.image_size": 24, "dataset.channels": 3,
                            "dataset.augment": "imagenet",
                            "dataset.flip": True})
    with tfds.testing.mock_data(num_examples=16):
        pipeline = make(config, batch=4)
        assert pipeline.source.encoded
        images, _ = next(iter(pipeline.train_dataset(single_context(), 0)))
        evaluation = batches(pipeline.eval_dataset(single_context()))
    assert images.shape == (4, 24, 24, 3)
    assert sum(r[2].sum() for r in evaluation) == 16


def test_tfds_dataset_not_prepared_says_how_to_prepare_it(tmp_path):
    config = tiny_config(**{"dataset.name": "tfds",
                            "dataset.tfds_name": "cifar10",
                            "dataset.data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"tfds dataset 'cifar10' is not "
                       r"prepared in dataset.data_dir=.*tfds build cifar10"):
        make(config)


def test_unknown_tfds_name():
    config = tiny_config(**{"dataset.name": "tfds",
                            "dataset.tfds_name": "no_such_dataset"})
    with pytest.raises(ValueError, match=r"`dataset.tfds_name` is not a "
                       r"tfds dataset. Received: dataset.tfds_name="
                       r"'no_such_dataset'"):
        make(config)


def write_folder(root, per_class=6, size=(20, 30)):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, size=(*size, 3)).astype("uint8")
            if i % 2:
                data = tf.io.encode_png(image).numpy()
                (root / name / f"{i}.png").write_bytes(data)
            else:
                data = tf.io.encode_jpeg(image).numpy()
                (root / name / f"{i}.JPG").write_bytes(data)


def folder_config(path, **changes):
    return tiny_config(**{"dataset.name": "folder",
                          "dataset.train_dir": str(path),
                          "dataset.image_size": 16, "dataset.channels": 3,
                          "dataset.augment": "imagenet",
                          "dataset.flip": True,
                          "dataset.validation_fraction": 0.25, **changes})


def test_folder_source_jpeg_and_png(tmp_path):
    write_folder(tmp_path)
    pipeline = make(folder_config(tmp_path), batch=3)
    assert pipeline.source.num_classes == 2
    assert pipeline.source.num_train + pipeline.source.num_eval == 12
    images, labels = next(iter(pipeline.train_dataset(single_context(), 0)))
    assert images.shape == (3, 16, 16, 3)
    rows = batches(pipeline.eval_dataset(single_context()))
    assert sum(r[2].sum() for r in rows) == 3


def test_folder_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    write_folder(tmp_path)
    (tmp_path / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dog" / "junk.png").write_bytes(b"not an image at all")
    # A JPEG header with nothing after it passes the cheap check and must be
    # dropped by the pipeline, not crash it.
    (tmp_path / "dog" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    config = folder_config(tmp_path, **{"dataset.eval_dir": str(tmp_path)})
    pipeline = make(config, batch=2)
    assert len(pipeline.source.skipped) == 2
    assert any("skipped 2 unreadable image(s)" in r.getMessage()
               for r in caplog.records)
    seen = sum(r[2].sum() for r in batches(
        pipeline.eval_dataset(single_context())))
    assert seen == 12  # 13 listed, the truncated one dropped while decoding.
    assert len(batches(pipeline.train_dataset(single_context(), 0))) == 6


def test_an_epoch_that_runs_short_ends_the_stream_there(tmp_path):
    # 30 of 42 training files pass the listing's check but do not decode:
    # the epoch's two bounded passes hold 24 images, 6 batches of the 10
    # due. A dataset of several epochs must stop there with an error (the
    # trainer's `NoDataError` for that epoch), not go on into the next
    # epoch's batches.
    write_folder(tmp_path)
    for index in range(30):
        (tmp_path / "dog" / f"bad{index}.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    config = folder_config(tmp_path, **{"dataset.eval_dir": str(tmp_path)})
    pipeline = make(config, batch=4)
    assert pipeline.steps_per_epoch == 10
    got = 0
    with pytest.raises(tf.errors.FailedPreconditionError):
        for _ in pipeline.train_dataset(single_context(), 0, epochs=3):
            got += 1
    assert got == 6


def test_folder_strict_mode_names_the_bad_file(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "dog" / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"unreadable image '.*junk.png' in "
                       r"dataset.train_dir="):
        make(folder_config(tmp_path, **{"dataset.strict": True}))


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(ValueError, match=r"`dataset.train_dir` must be a "
                       r"directory .* Received: dataset.train_dir="):
        make(folder_config(tmp_path / "missing"))
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match=r"`dataset.train_dir` holds no JPEG"
                       r" or PNG images"):
        make(folder_config(tmp_path))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset.name": "imagenet"},
         r"`dataset.name` must be one of 'digits', 'synthetic', 'tfds', "
         r"'folder'. Received: dataset.name='imagenet'"),
        ({"dataset.augment": "mixup"}, r"Received: dataset.augment='mixup'"),
        ({"dataset.validation_fraction": 1.0},
         r"Received: dataset.validation_fraction=1.0"),
        ({"dataset.name": "tfds"}, r"`dataset.tfds_name` is required"),
        ({"dataset.label_noise": 1.0},
         r"`dataset.label_noise` must be a number in \[0, 1\). Received: "
         r"dataset.label_noise=1.0"),
    ],
)
def test_bad_dataset_config(changes, message):
    with pytest.raises(ValueError, match=message):
        make(tiny_config(**changes))


def test_batch_larger_than_the_training_set():
    with pytest.raises(ValueError, match=r"`batch_size` must be at most the "
                       r"1438 training examples. Received: batch_size=2048"):
        make(batch=2048)


def test_label_noise_is_fresh_each_epoch_and_repeatable():
    # Batches of 359 (the evaluation split's size): 4 per epoch.
    clean = make(batch=359)
    noisy = make(tiny_config(**{"dataset.label_noise": 0.5}), batch=359)

    def labels(pipeline, epoch):
        return np.concatenate([y for _, y in batches(
            pipeline.train_dataset(single_context(), epoch))])

    truth = labels(clean, 0)
    first, again, other = (labels(noisy, 0), labels(noisy, 0),
                           labels(noisy, 1))
    np.testing.assert_array_equal(first, again)  # Resume draws the same.
    assert not np.array_equal(first, other)  # Every epoch draws afresh.
    # Half the labels redrawn uniformly: 0.5 * 9/10 = 45% end up wrong.
    wrong = np.mean(first != truth)
    assert 0.40 < wrong < 0.50, wrong
    # The eval split keeps its true labels.
    (_, eval_labels, _), *_ = batches(noisy.eval_dataset(single_context()))
    (_, clean_eval, _), *_ = batches(clean.eval_dataset(single_context()))
    np.testing.assert_array_equal(eval_labels, clean_eval)


def test_label_noise_entropy():
    # 20% redrawn: the true label has 0.82, each other 0.02.
    expected = -0.82 * np.log(0.82) - 9 * 0.02 * np.log(0.02)
    assert input_pipeline.label_noise_entropy(0.2, 10) == pytest.approx(
        expected, rel=1e-12)
    assert input_pipeline.label_noise_entropy(0.0, 10) == 0.0
