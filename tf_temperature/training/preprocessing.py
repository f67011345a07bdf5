"""Image preprocessing ops for tf.data: ImageNet- and CIFAR-style.

Each op works on one example, eagerly or inside `Dataset.map`, and takes
its randomness as an explicit stateless seed (a `[2]` int tensor), so that
a deterministic run draws the same crops after a restart (big_vision's
advice: test ops both ways, "you'd be surprised how much these two differ").

* ImageNet-style training (Szegedy et al. 2015, as in He et al. 2016 and
  Goyal et al. 2017): a random crop of 8% to 100% of the area with aspect
  ratio 3/4 to 4/3, resized to the output size, and a horizontal flip. On
  JPEG bytes the crop is fused with decoding (`decode_and_crop_jpeg`), which
  decodes only the crop window.
* ImageNet-style evaluation: resize so that the crop is 224/256 of the
  shorter side, then take the central crop.
* CIFAR-style training (He et al. 2016, section 4.2): pad 4 pixels on each
  side, take a random crop of the original size, flip horizontally.
* Normalization: per-channel `(x - mean) / std` on images scaled to [0, 1].
"""

import tensorflow as tf

# ImageNet channel statistics on [0, 1]-scaled RGB (torchvision, Flax).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# CIFAR-10 training-set statistics on [0, 1]-scaled RGB.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# Evaluation crops 224 of 256: the shorter side is resized to size / 0.875.
EVAL_CROP_FRACTION = 224 / 256
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)


def to_float(image):
    """Converts a uint8 image to float32 in [0, 1]; floats are kept."""
    return tf.image.convert_image_dtype(image, tf.float32)


def normalize(image, mean, std):
    """Per-channel `(image - mean) / std` of a [0, 1]-scaled image."""
    image = to_float(image)
    return (image - tf.constant(mean, image.dtype)) / tf.constant(
        std, image.dtype
    )


def _sample_crop(image_shape, seed):
    """A random crop window of 8-100% of the area, aspect ratio 3/4-4/3."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


def _resize(image, size):
    return tf.image.resize(image, [size, size], method="bilinear",
                           antialias=False)


def random_resized_crop(image, size, seed):
    """ImageNet-style random crop of a decoded image, resized to `size`.

    Args:
        image: `[height, width, channels]`, uint8 or float.
        size: output side length.
        seed: `[2]` int stateless seed.

    Returns:
        float32 `[size, size, channels]` in [0, 1].
    """
    image = to_float(image)
    begin, crop = _sample_crop(tf.shape(image), seed)
    return _resize(tf.slice(image, begin, crop), size)


def decode_and_random_resized_crop(image_bytes, size, seed, channels=3):
    """`random_resized_crop` of encoded bytes; JPEG decodes the crop only.

    Args:
        image_bytes: a scalar string tensor holding a JPEG, PNG, BMP or GIF.
        size: output side length.
        seed: `[2]` int stateless seed.
        channels: channels to decode.

    Returns:
        float32 `[size, size, channels]` in [0, 1].
    """

    def fused_jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        begin, crop = _sample_crop(shape, seed)
        window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
        image = tf.image.decode_and_crop_jpeg(image_bytes, window,
                                              channels=channels)
        return _resize(to_float(image), size)

    def other():
        image = tf.io.decode_image(image_bytes, channels=channels,
                                   expand_animations=False)
        return random_resized_crop(image, size, seed)

    image = tf.cond(tf.io.is_jpeg(image_bytes), fused_jpeg, other)
    return tf.ensure_shape(image, [size, size, channels])


def center_crop(image, size):
    """ImageNet-style evaluation crop of a decoded image.

    The central square of `EVAL_CROP_FRACTION` (224/256) of the shorter
    side, resized to `size`: the same as resizing the shorter side to
    `size / 0.875` and cropping `size` from the middle.

    Args:
        image: `[height, width, channels]`, uint8 or float.
        size: output side length.

    Returns:
        float32 `[size, size, channels]` in [0, 1].
    """
    image = to_float(image)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(
        EVAL_CROP_FRACTION * tf.cast(tf.minimum(height, width), tf.float32),
        tf.int32,
    )
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    return _resize(image[top:top + side, left:left + side], size)


def decode_and_center_crop(image_bytes, size, channels=3):
    """`center_crop` of encoded image bytes."""
    image = tf.io.decode_image(image_bytes, channels=channels,
                               expand_animations=False)
    image = center_crop(image, size)
    return tf.ensure_shape(image, [size, size, channels])


def random_flip(image, seed):
    """Flips left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_random_crop(image, seed, padding=4):
    """CIFAR-style: zero-pad `padding` pixels per side, crop back at random.

    Args:
        image: `[height, width, channels]` with a static shape.
        seed: `[2]` int stateless seed.
        padding: pixels added on each side before cropping.

    Returns:
        float32 image of the input's shape, in [0, 1] before normalization.
    """
    image = to_float(image)
    shape = image.shape
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, shape, seed)


def resize(image, size):
    """Resizes a decoded image to `[size, size]` (e.g. upsampled digits)."""
    image = to_float(image)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return _resize(image, size)
