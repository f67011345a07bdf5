"""Tests of the ResNet and plain-CNN families (He et al. 2016)."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_temperature import models
from tf_temperature.layers import TemperatureSoftmax

# He et al. 2016 (CIFAR, option A, 10 classes; plain nets the same) and the
# torchvision reference counts (ImageNet, 1000 classes).
CIFAR_COUNTS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018,
                110: 1_727_962}
IMAGENET_COUNTS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032,
                   101: 44_549_160, 152: 60_192_808}
TINY = dict(depth=8, width=4, input_shape=(8, 8, 1))


@functools.cache
def cifar(depth, residual=True):
    return models.cifar_resnet(depth, residual=residual)


@functools.cache
def imagenet(depth):
    return models.imagenet_resnet(depth)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def count_layers(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_parameter_counts_and_additions(depth):
    n = (depth - 2) // 6
    resnet, plain = cifar(depth), cifar(depth, residual=False)
    assert trainable_count(resnet) == CIFAR_COUNTS[depth]
    assert trainable_count(plain) == CIFAR_COUNTS[depth]
    assert count_layers(resnet, keras.layers.Add) == 3 * n
    assert count_layers(plain, keras.layers.Add) == 0
    assert resnet.name == f"resnet{depth}" and plain.name == f"plain{depth}"

@pytest.mark.slow
def test_cifar_resnet_1202_has_19_4_million_parameters():
    model = models.cifar_resnet(1202)  # He et al. Table 6: 19.4M.
    assert round(trainable_count(model) / 1e5) == 194
    assert count_layers(model, keras.layers.Add) == 3 * 200


@pytest.mark.parametrize("depth", sorted(IMAGENET_COUNTS))
def test_imagenet_parameter_counts_and_additions(depth):
    model = imagenet(depth)
    assert trainable_count(model) == IMAGENET_COUNTS[depth]
    blocks = sum(models.IMAGENET_BLOCKS[depth][1])
    assert count_layers(model, keras.layers.Add) == blocks


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_imagenet_plain_nets_have_no_additions_and_no_projections(depth):
    plain = models.imagenet_resnet(depth, residual=False)
    assert count_layers(plain, keras.layers.Add) == 0
    assert not [layer for layer in plain.layers if "shortcut" in layer.name]
    # Same layers minus the projection shortcuts (conv kernel + BN).
    kind, _ = models.IMAGENET_BLOCKS[depth]
    widths = [64, 128, 256, 512]
    if kind == "basic":
        projections = [(64 * 2 ** i, 128 * 2 ** i) for i in range(3)]
    else:
        projections = [(64, 256)] + [(4 * w, 8 * w) for w in widths[:3]]
    extra = sum(cin * cout + 2 * cout for cin, cout in projections)
    assert trainable_count(plain) == IMAGENET_COUNTS[depth] - extra


def test_cifar_option_b_adds_projections_only_where_shape_changes():
    model = models.cifar_resnet(20, shortcut="B")
    # Two downsampling blocks: 1x1 convs 16->32 and 32->64, each with BN.
    extra = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert trainable_count(model) == CIFAR_COUNTS[20] + extra
    assert count_layers(model, keras.layers.Add) == 9


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_forward_shapes(depth):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3))
    for model in (cifar(depth), cifar(depth, residual=False)):
        out = model(x.astype("float32"), training=False)
        assert out.shape == (2, 10)
        assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize("depth", sorted(IMAGENET_COUNTS))
def test_imagenet_forward_shapes(depth):
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3))
    out = imagenet(depth)(x.astype("float32"), training=False)
    assert out.shape == (1, 1000)
    assert out.dtype == "float32"


def test_tiny_variants_from_the_same_builders():
    digits = models.cifar_resnet(**TINY)
    assert digits.output_shape == (None, 10)
    assert count_layers(digits, keras.layers.Add) == 3
    tiny_imagenet = models.imagenet_resnet(50, width=4,
                                           input_shape=(32, 32, 3),
                                           num_classes=7)
    out = tiny_imagenet(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 7)


def test_zero_pad_shortcut_matches_numpy_and_round_trips():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    layer = models.ZeroPadShortcut(8, strides=2)
    out = layer(x).numpy()
    expected = np.zeros((2, 3, 3, 8), "float32")
    expected[..., 2:5] = x[:, ::2, ::2, :]
    np.testing.assert_array_equal(out, expected)
    assert layer.compute_output_shape((None, 5, 5, 3)) == (None, 3, 3, 8)
    clone = models.ZeroPadShortcut.from_config(layer.get_config())
    np.testing.assert_array_equal(clone(x), out)


def test_keras_file_round_trip(tmp_path):
    model = models.cifar_resnet(**TINY, head="softmax", temperature=2.0)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).random((3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_weight_decay_on_kernels_only():
    model = models.cifar_resnet(**TINY, weight_decay=1e-4)
    kernels = [layer.kernel for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D,
                                     keras.layers.Dense))]
    assert len(model.losses) == len(kernels)
    # SGD weight decay lambda = 1e-4 adds lambda * w to the gradient: the
    # penalty is lambda / 2 * |w|^2.
    expected = sum(5e-5 * float(tf.reduce_sum(k ** 2)) for k in kernels)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    conv = model.get_layer("stem_conv")
    with tf.GradientTape() as tape:
        penalty = sum(model.losses)
    grad = tape.gradient(penalty, conv.kernel)
    np.testing.assert_allclose(grad, 1e-4 * conv.kernel.numpy(), rtol=1e-5)
    assert models.cifar_resnet(**TINY, weight_decay=0).losses == []


def test_zero_init_of_last_bn_gamma_in_residual_blocks():
    resnet = models.cifar_resnet(**TINY)
    plain = models.cifar_resnet(**TINY, residual=False)
    for block in ("stage1_block1", "stage2_block1", "stage3_block1"):
        np.testing.assert_array_equal(
            resnet.get_layer(f"{block}_2_bn").gamma.numpy(), 0.0)
        np.testing.assert_array_equal(
            resnet.get_layer(f"{block}_1_bn").gamma.numpy(), 1.0)
        np.testing.assert_array_equal(
            plain.get_layer(f"{block}_2_bn").gamma.numpy(), 1.0)
    off = models.cifar_resnet(**TINY, zero_init_residual=False)
    np.testing.assert_array_equal(
        off.get_layer("stage1_block1_2_bn").gamma.numpy(), 1.0)
    bottleneck = models.imagenet_resnet(50, width=4, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(
        bottleneck.get_layer("stage1_block1_3_bn").gamma.numpy(), 0.0)


def test_softmax_head_is_a_temperature_softmax():
    model = models.cifar_resnet(**TINY, head="softmax", temperature=0.5)
    assert isinstance(model.layers[-1], TemperatureSoftmax)
    assert float(model.layers[-1].temperature) == pytest.approx(0.5)
    out = model(np.random.default_rng(0).random((4, 8, 8, 1)))
    np.testing.assert_allclose(out.numpy().sum(-1), 1.0, rtol=1e-5)


def _train_step_results(x, y, mode):
    """Loss and weights after one SGD step, from the same initial weights."""
    keras.utils.set_random_seed(0)
    model = models.cifar_resnet(**TINY)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + sum(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    if mode == "function":
        step = tf.function(step)
    elif mode == "xla":
        step = tf.function(step, jit_compile=True)
    losses = [float(step(x, y)) for _ in range(2)]
    return losses, model.get_weights()


@pytest.mark.slow
@pytest.mark.tensorflow_only  # tf.GradientTape and tf.function.
def test_train_step_eager_function_and_xla_agree():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 16).astype("int32")
    eager_losses, eager_weights = _train_step_results(x, y, "eager")
    assert eager_losses[1] != eager_losses[0]  # The step changed the model.
    for mode in ("function", "xla"):
        losses, weights = _train_step_results(x, y, mode)
        np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
        for a, b in zip(weights, eager_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_gives_float32_logits_and_finite_loss(
        mixed_precision, policy):
    mixed_precision(policy)
    model = models.cifar_resnet(**TINY)
    assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    logits = model(x, training=True)
    assert logits.dtype == "float32"
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        np.arange(4), logits)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (models.cifar_resnet, {"depth": 21},
         r"`depth` must be of the form 6n\+2 with n >= 1 .* "
         r"Received: depth=21"),
        (models.cifar_resnet, {"depth": 2}, r"Received: depth=2"),
        (models.cifar_resnet, {"depth": "20"}, r"Received: depth='20'"),
        (models.imagenet_resnet, {"depth": 20},
         r"`depth` must be one of 18, 34, 50, 101, 152. Received: depth=20"),
        (models.cifar_resnet, {"depth": 20, "shortcut": "C"},
         r"`shortcut` must be one of 'A', 'B'. Received: shortcut='C'"),
        (models.imagenet_resnet, {"depth": 18, "shortcut": "c"},
         r"Received: shortcut='c'"),
        (models.cifar_resnet, {"depth": 20, "input_shape": (2, 2, 3)},
         r"`input_shape` must be at least 4x4 \(the network's total "
         r"stride\). Received: input_shape=\(2, 2, 3\)"),
        (models.imagenet_resnet, {"depth": 18, "input_shape": (16, 64, 3)},
         r"at least 32x32 .* Received: input_shape=\(16, 64, 3\)"),
        (models.cifar_resnet, {"depth": 20, "input_shape": (32, 32)},
         r"`input_shape` must be \(height, width, channels\) of positive "
         r"integers. Received: input_shape=\(32, 32\)"),
        (models.cifar_resnet, {"depth": 20, "head": "probs"},
         r"`head` must be one of 'logits', 'softmax'. Received: head='probs'"),
        (models.cifar_resnet, {"depth": 20, "residual": "no"},
         r"`residual` must be True or False. Received: residual='no'"),
        (models.cifar_resnet, {"depth": 20, "weight_decay": -1e-4},
         r"Received: weight_decay=-0.0001"),
        (models.cifar_resnet, {"depth": 20, "num_classes": 0},
         r"Received: num_classes=0"),
    ],
)
def test_bad_input(build, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)
