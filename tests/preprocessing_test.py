"""Preprocessing ops: numbers, and the same results eagerly and in map."""

import numpy as np
import pytest
import tensorflow as tf

from tf_temperature.training import preprocessing

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, size=(96, 128, 3)).astype("uint8")
SEED = tf.constant([3, 7], tf.int64)


def in_map(fn, *args):
    """Runs fn(*args) inside Dataset.map (graph mode, tf.data's threads)."""
    dataset = tf.data.Dataset.from_tensors(tuple(args)).map(fn)
    return next(iter(dataset))


@pytest.mark.parametrize(
    "name, fn, args",
    [
        ("random_resized_crop",
         lambda image, seed: preprocessing.random_resized_crop(image, 32,
                                                               seed),
         (IMAGE, SEED)),
        ("decode_and_random_resized_crop",
         lambda data, seed: preprocessing.decode_and_random_resized_crop(
             data, 32, seed),
         (tf.io.encode_jpeg(IMAGE), SEED)),
        ("center_crop", lambda image: preprocessing.center_crop(image, 48),
         (IMAGE,)),
        ("decode_and_center_crop",
         lambda data: preprocessing.decode_and_center_crop(data, 48),
         (tf.io.encode_png(IMAGE),)),
        ("random_flip", preprocessing.random_flip,
         (IMAGE.astype("float32"), SEED)),
        ("pad_and_random_crop", preprocessing.pad_and_random_crop,
         (IMAGE.astype("float32") / 255, SEED)),
        ("normalize",
         lambda image: preprocessing.normalize(
             image, preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD),
         (IMAGE,)),
    ],
)
def test_same_directly_and_inside_dataset_map(name, fn, args):
    direct = fn(*[tf.constant(a) for a in args])
    mapped = in_map(fn, *args)
    assert direct.shape == mapped.shape, name
    np.testing.assert_allclose(direct.numpy(), mapped.numpy(), atol=1e-6)


def test_crop_windows_follow_area_and_aspect_ranges():
    shape = tf.constant([200, 300, 3])
    for i in range(200):
        _, size = preprocessing._sample_crop(shape, tf.constant([i, 1]))
        height, width = int(size[0]), int(size[1])
        area = height * width / (200 * 300)
        assert 0.08 - 0.01 <= area <= 1.0
        # Whole-image fallback aside, the aspect ratio is in [3/4, 4/3].
        if (height, width) != (200, 300):
            assert 0.75 - 0.02 <= width / height <= 4 / 3 + 0.02


def test_fused_jpeg_crop_equals_decode_then_crop():
    data = tf.io.encode_jpeg(IMAGE, quality=95)
    decoded = tf.io.decode_jpeg(data)
    for i in range(5):
        seed = tf.constant([i, 2], tf.int64)
        fused = preprocessing.decode_and_random_resized_crop(data, 40, seed)
        plain = preprocessing.random_resized_crop(decoded, 40, seed)
        # The same window: pixels agree except along the crop's edge, where
        # libjpeg's chroma upsampling sees no neighbours outside the window.
        close = np.isclose(fused, plain, atol=1e-5)
        assert close.mean() > 0.95
        assert np.abs(fused - plain).mean() < 2e-3
    # PNG (not fused) goes through the same crop.
    png = preprocessing.decode_and_random_resized_crop(
        tf.io.encode_png(IMAGE), 40, SEED)
    np.testing.assert_allclose(
        png, preprocessing.random_resized_crop(IMAGE, 40, SEED), atol=1e-6)


def test_center_crop_takes_224_of_256_of_the_shorter_side():
    image = RNG.random((256, 320, 3)).astype("float32")
    out = preprocessing.center_crop(image, 224)
    # 224/256 of 256 = 224: no resize; centred: rows 16..240, cols 48..272.
    np.testing.assert_allclose(out, image[16:240, 48:272], atol=1e-6)


def test_pad_and_random_crop_is_a_shifted_window():
    image = RNG.random((8, 8, 1)).astype("float32")
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    for i in range(10):
        out = preprocessing.pad_and_random_crop(
            image, tf.constant([i, 0])).numpy()
        assert out.shape == (8, 8, 1)
        assert any(np.array_equal(out, padded[dy:dy + 8, dx:dx + 8])
                   for dy in range(9) for dx in range(9))


def test_flip_is_seeded():
    image = RNG.random((4, 4, 1)).astype("float32")
    outs = [preprocessing.random_flip(image, tf.constant([i, 0])).numpy()
            for i in range(20)]
    flipped = [np.array_equal(o, image[:, ::-1]) for o in outs]
    assert any(flipped) and not all(flipped)
    again = preprocessing.random_flip(image, tf.constant([3, 0])).numpy()
    np.testing.assert_array_equal(again, outs[3])


def test_normalize():
    out = preprocessing.normalize(np.full((2, 2, 3), 255, "uint8"),
                                  (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    np.testing.assert_allclose(out[0, 0], [2.0, 1.0, 0.5])
