"""Model builders: architecture only, no data or optimizer.

* `resnet`: `cifar_resnet`, `imagenet_resnet` and their plain twins
  (He et al. 2016), from the blocks of `resnet_blocks`; the CIFAR family
  also without batch norm, and as a population of copies.
* `dense`: `linear_model` (softmax regression), `mlp_model`.
* `digits_cnn`: the quickstart's small CNN with a `TemperatureSoftmax` head.

`build_model(config.model, input_shape, num_classes)` picks one by the
training config's `model.family`.
"""

from tf_temperature import _validation
from tf_temperature.models.dense import linear_model, mlp_model
from tf_temperature.models.digits_cnn import digits_cnn
from tf_temperature.models.resnet import (
    HEADS,
    IMAGENET_BLOCKS,
    SHORTCUTS,
    check_depth,
    cifar_resnet,
    imagenet_resnet,
)
from tf_temperature.models.resnet_blocks import ZeroPadShortcut

# The training config's `model.family` values.
FAMILIES = ("cifar", "imagenet", "linear", "mlp")


def check_model_config(model):
    """Raises `ValueError` naming the first bad `model.*` field of a
    training config (`build_model`'s argument): the builders' rules for
    the config's family, under the config's names, so that every message
    names the field a user set."""
    family = _validation.one_of("model.family", model.family, FAMILIES)
    # Before Keras' `l2`, whose message names its own argument.
    _validation.non_negative_number("model.weight_decay", model.weight_decay)
    if family == "linear":
        return
    if family == "mlp":
        _validation.positive_integer("model.depth", model.depth)
        _validation.positive_integer("model.width", model.width)
        return
    check_depth(family, model.depth, "model.depth")
    _validation.boolean("model.residual", model.residual)
    _validation.one_of("model.shortcut", model.shortcut, SHORTCUTS)
    _validation.positive_integer("model.width", model.width)
    if not _validation.boolean("model.batch_norm",
                               model.get("batch_norm", True)) and (
            family != "cifar"):
        raise ValueError("`model.batch_norm` must be True with model.family="
                         f"{family!r} (only the cifar family has a BN-free "
                         "variant). Received: model.batch_norm=False")


def build_model(model_config, input_shape, num_classes):
    """The model a training config's `model` section describes.

    Args:
        model_config: `config.model` (`family`, `depth`, `width`,
            `residual`, `shortcut`, `weight_decay`, `zero_init_residual`,
            `batch_norm`: absent means True).
        input_shape: the image shape.
        num_classes: the number of logits.

    Returns:
        A `keras.Model` from images to float32 logits.

    Raises:
        ValueError: naming the first bad `model.*` field
            (`check_model_config`).
    """
    check_model_config(model_config)
    if model_config.family == "linear":
        return linear_model(input_shape, num_classes,
                            model_config.weight_decay)
    if model_config.family == "mlp":
        return mlp_model(input_shape, num_classes, model_config.depth,
                         model_config.width, model_config.weight_decay)
    common = dict(
        residual=model_config.residual,
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        width=model_config.width,
        shortcut=model_config.shortcut,
        weight_decay=model_config.weight_decay,
        zero_init_residual=model_config.zero_init_residual,
    )
    batch_norm = model_config.get("batch_norm", True)
    if model_config.family == "cifar":
        return cifar_resnet(model_config.depth, batch_norm=batch_norm,
                            **common)
    return imagenet_resnet(model_config.depth, **common)


__all__ = [
    "FAMILIES",
    "HEADS",
    "IMAGENET_BLOCKS",
    "SHORTCUTS",
    "ZeroPadShortcut",
    "build_model",
    "check_model_config",
    "cifar_resnet",
    "digits_cnn",
    "imagenet_resnet",
    "linear_model",
    "mlp_model",
]
