"""ResNets and their plain twins (He et al. 2016), CIFAR- and ImageNet-style.

The lecture's central figure is He et al. 2016 ("Deep Residual Learning for
Image Recognition"), Figures 4 and 6: plain CNNs against ResNets with the
same layers, the learning rate cut during training. Both builders here make
either family from the same code: `residual=False` removes the shortcut
branches and nothing else.

* `cifar_resnet`: section 4.2. A 3x3 stem with `width` filters, three
  stages of `n = (depth - 2) / 6` basic blocks at `width`, `2 width`,
  `4 width` filters (stride 2 at the start of stages 2 and 3), global
  average pooling, a dense head. Shortcut option A (identity, zero-padded
  channels when the shape changes; no parameters) as in the paper, or B (a
  1x1 projection where the shape changes).
* `imagenet_resnet`: Table 1. A 7x7/2 stem and a 3x3/2 max-pool, four stages
  of basic (18, 34) or bottleneck (50, 101, 152) blocks, projection
  shortcuts (option B) where the shape changes. The stride of a bottleneck
  block sits on its 3x3 convolution, as in Goyal et al. 2017 (section 5.1)
  and torchvision ("ResNet v1.5"); parameter counts are the same either way.

Both: batch norm after every convolution (convolutions have no bias); weight
decay on conv and dense kernels only; Goyal et al. section 5.1's zero
initialization of the last batch-norm gamma of each residual block (on by
default for residual nets, off for plain ones, where it would cut the
signal); channels-last; a float32 head under mixed precision, ending in
logits or in a `TemperatureSoftmax`.
"""

import keras

from tf_temperature import _validation
from tf_temperature.layers import TemperatureSoftmax
from tf_temperature.models import resnet_blocks

IMAGENET_BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
SHORTCUTS = ("A", "B")
HEADS = ("logits", "softmax")
def check_depth(family, depth, name="depth"):
    """Returns `depth` if the `family`'s builder takes it: 6n+2 with
    n >= 1 for "cifar" (He et al. 2016, section 4.2), one of
    `IMAGENET_BLOCKS` for "imagenet"; else raises `ValueError` naming
    `name` (a config passes its own field name, `model.depth`)."""
    if family == "cifar" and (not isinstance(depth, int)
                              or isinstance(depth, bool) or depth < 8
                              or (depth - 2) % 6):
        raise ValueError(
            f"`{name}` must be of the form 6n+2 with n >= 1 (20, 32, 44, 56, "
            f"110, 1202, ...). Received: {name}={depth!r}")
    if family == "imagenet" and (depth not in IMAGENET_BLOCKS
                                 or isinstance(depth, bool)):
        raise ValueError(
            f"`{name}` must be one of 18, 34, 50, 101, 152. "
            f"Received: {name}={depth!r}")
    return depth


def _check_common(residual, input_shape, shortcut, head, num_classes,
                  width, weight_decay, temperature, min_size):
    if not isinstance(residual, bool):
        raise ValueError(
            f"`residual` must be True or False. Received: residual={residual!r}"
        )
    _validation.one_of("shortcut", shortcut, SHORTCUTS)
    _validation.one_of("head", head, HEADS)
    _validation.positive_integer("num_classes", num_classes)
    _validation.positive_integer("width", width)
    _validation.non_negative_number("weight_decay", weight_decay or 0.0)
    _validation.positive_number("temperature", temperature)
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) \
        else None
    valid = (
        shape is not None
        and len(shape) == 3
        and all(isinstance(d, int) and d > 0 for d in shape)
    )
    if not valid:
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive "
            f"integers. Received: input_shape={input_shape!r}"
        )
    if min(shape[:2]) < min_size:
        raise ValueError(
            f"`input_shape` must be at least {min_size}x{min_size} (the "
            f"network's total stride). Received: input_shape={input_shape!r}"
        )
    return shape


def _finish(inputs, x, build, depth, num_classes, head, temperature, name):
    """Pooling, the head, and the model named after its family."""
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if build.population:
        layers = resnet_blocks.population_layers()
        x = layers.SplitCopies(build.population, name="split")(x)
        outputs = layers.PopulationDense(
            num_classes, build.population, name="logits")(x)
    else:
        # float32 logits under mixed precision (the Keras mixed-precision
        # guide: the model's last layer computes in float32). Weight decay
        # on the kernel only, not the bias.
        outputs = keras.layers.Dense(num_classes, dtype="float32",
                                     kernel_regularizer=build.regularizer,
                                     name="logits")(x)
    if head == "softmax":
        outputs = TemperatureSoftmax(temperature,
                                     name="probabilities")(outputs)
    family = "resnet" if build.residual else "plain"
    with resnet_blocks.recursion_room(build.blocks):
        return keras.Model(inputs, outputs, name=name or f"{family}{depth}")


def cifar_resnet(
    depth,
    residual=True,
    num_classes=10,
    input_shape=(32, 32, 3),
    width=16,
    shortcut="A",
    weight_decay=1e-4,
    zero_init_residual=None,
    head="logits",
    temperature=1.0,
    name=None,
    batch_norm=True,
    population=None,
):
    """The CIFAR ResNet (or plain net) of He et al. 2016, section 4.2.

    ResNet-20/32/44/56/110/1202 and plain-20/32/44/56 (Figure 6) with the
    defaults; `cifar_resnet(8, width=4, input_shape=(8, 8, 1))` is a tiny
    variant for the digits data and tests.

    Args:
        depth: `6 n + 2` layers (20, 32, 44, 56, 110, 1202, or any such).
        residual: False gives the plain net: the same layers, no shortcuts.
        num_classes: size of the head.
        input_shape: `(height, width, channels)`, at least 4x4.
        width: filters of the first stage (16 in the paper).
        shortcut: `"A"` (identity, zero-padded; no parameters) or `"B"`
            (1x1 projection where the shape changes).
        weight_decay: SGD weight decay on conv and dense kernels (adds
            `weight_decay * w` to the gradient); 0 or None for none.
        zero_init_residual: zero the last batch-norm gamma of each residual
            block (Goyal et al. 2017, section 5.1); None means "if residual".
        head: `"logits"` or `"softmax"` (a `TemperatureSoftmax`).
        temperature: the head's softmax temperature (with `head="softmax"`).
        name: model name; default `resnet{depth}` or `plain{depth}`.
        batch_norm: False removes every batch norm; the convolutions get
            biases, and a residual block's last convolution starts at zero
            where its batch norm's gamma would (`zero_init_residual`).
        population: None, or `S` for `S` independent copies trained as one
            model (`studies.population`: inputs `[S, B, H, W, C]`, logits
            `[S, B, K]`); needs `batch_norm=False`, `head="logits"` and no
            weight decay.

    Returns:
        A `keras.Model` from images to float32 logits (or probabilities).

    Raises:
        ValueError: for a depth not of the form 6n+2, an unknown shortcut or
            head, an input smaller than 4x4, or another bad argument.
    """
    check_depth("cifar", depth)
    shape = _check_common(residual, input_shape, shortcut, head, num_classes,
                          width, weight_decay, temperature, min_size=4)
    if not isinstance(batch_norm, bool):
        raise ValueError("`batch_norm` must be True or False. Received: "
                         f"batch_norm={batch_norm!r}")
    if population is not None:
        _validation.positive_integer("population", population)
        for field, value, ok in (
                ("batch_norm", batch_norm, not batch_norm),
                ("head", head, head == "logits"),
                ("weight_decay", weight_decay, not weight_decay)):
            if not ok:
                raise ValueError(
                    f"`{field}` is not supported with `population` (copies "
                    "without batch statistics, plain SGD). Received: "
                    f"{field}={value!r}")
    blocks_per_stage = (depth - 2) // 6
    build = resnet_blocks.Builder(residual, weight_decay, zero_init_residual,
                                  shortcut, batch_norm, population)

    if population:
        inputs = keras.Input((None, *shape), batch_size=population,
                             name="images")
        x = resnet_blocks.population_layers().MergeCopies(name="merge")(inputs)
    else:
        inputs = keras.Input(shape, name="images")
        x = inputs
    x = build.conv_bn(x, width, 3, 1, "stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = build.basic_block(x, filters, strides,
                                  f"stage{stage + 1}_block{block + 1}")
    return _finish(inputs, x, build, depth, num_classes, head, temperature,
                   name)


def imagenet_resnet(
    depth,
    residual=True,
    num_classes=1000,
    input_shape=(224, 224, 3),
    width=64,
    shortcut="B",
    weight_decay=1e-4,
    zero_init_residual=None,
    head="logits",
    temperature=1.0,
    name=None,
):
    """The ImageNet ResNet (or plain net) of He et al. 2016, Table 1.

    ResNet-18/34 (basic blocks) and 50/101/152 (bottleneck blocks) with the
    defaults; `residual=False` gives plain-18/34 and plain bottleneck nets.
    `width=8, input_shape=(32, 32, 3)` makes a tiny variant for tests.

    Args:
        depth: 18, 34, 50, 101 or 152.
        residual: False gives the plain net: the same layers, no shortcuts.
        num_classes: size of the head.
        input_shape: `(height, width, channels)`, at least 32x32 (the total
            stride).
        width: filters of the stem and first stage (64 in the paper).
        shortcut: `"B"` (projection where the shape changes; the paper's
            ImageNet choice) or `"A"` (identity, zero-padded).
        weight_decay: SGD weight decay on conv and dense kernels (adds
            `weight_decay * w` to the gradient); 0 or None for none.
        zero_init_residual: zero the last batch-norm gamma of each residual
            block (Goyal et al. 2017, section 5.1); None means "if residual".
        head: `"logits"` or `"softmax"` (a `TemperatureSoftmax`).
        temperature: the head's softmax temperature (with `head="softmax"`).
        name: model name; default `resnet{depth}` or `plain{depth}`.

    Returns:
        A `keras.Model` from images to float32 logits (or probabilities).

    Raises:
        ValueError: for a depth not in {18, 34, 50, 101, 152}, an unknown
            shortcut or head, an input smaller than 32x32, or another bad
            argument.
    """
    check_depth("imagenet", depth)
    shape = _check_common(residual, input_shape, shortcut, head, num_classes,
                          width, weight_decay, temperature, min_size=32)
    kind, blocks = IMAGENET_BLOCKS[depth]
    build = resnet_blocks.Builder(residual, weight_decay, zero_init_residual,
                                  shortcut)
    block_fn = build.basic_block if kind == "basic" else build.bottleneck_block

    inputs = keras.Input(shape, name="images")
    x = build.conv_bn(inputs, width, 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                  name="stem_pool")(x)
    for stage, count in enumerate(blocks):
        filters = width * 2**stage
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = block_fn(x, filters, strides,
                         f"stage{stage + 1}_block{block + 1}")
    return _finish(inputs, x, build, depth, num_classes, head, temperature,
                   name)
