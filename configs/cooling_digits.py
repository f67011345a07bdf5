r"""Decay eta, or grow B? Smith et al. 2018 on the bundled digits.

    python -m pipelines.cooling --workdir=runs/cooling

Three schedules cool SGD by the same factors at the same epochs (the
temperature eta / B falls by `cooling.factor` k at epochs 15 and 23):
"decay" divides eta by k at fixed B; "grow" multiplies B by k at fixed eta;
"hybrid" does half of each (B x sqrt(k), eta / sqrt(k)). A fourth,
"grow_root" (B x sqrt(k) at fixed eta), cools less: the positive control.
Each runs with `cooling.seeds`; the same seed gives the same start and the
same first phase in all. The seeds train as the copies of one population
(`cooling.runner`), to the numbers trainer runs give (float32 rounding). The
model is the study's BN-free perceptron (batch norm would make the loss
depend on B through its statistics) on 1,024 training digits, which every
batch divides (no example is dropped, and the epochs hold the same examples
at every B). The base rate is near the study's best eta0 at B = 16. A fifth
of the training labels are redrawn at random each epoch
(`dataset.label_noise`): the loss then has a floor that SGD equilibrates
above, so the temperature shows in the curves (without it the perceptron
memorizes the 1,024 digits within the first phase, and the later phases
change nothing measurable).
"""

import ml_collections

from configs import tune_digits


def get_config():
    """Returns the cooling experiment configuration."""
    config = tune_digits.get_config()
    del config["tune"]
    # One op thread pool of each kind: its runs are small trainer runs,
    # where TensorFlow's default pools oversubscribe 2 cores (BUILD_NOTES).
    config.intra_op_threads = 1
    config.inter_op_threads = 1
    config.batch_size = 16
    config.num_epochs = 30
    config.optimizer.eta0 = 0.02  # eta = 0.32 at B = 16.
    config.optimizer.boundaries_epochs = (15.0, 23.0)
    config.dataset.label_noise = 0.2

    config.cooling = ml_collections.ConfigDict()
    # The cooling factor at each boundary: a square (the hybrid takes its
    # root for B and for eta).
    config.cooling.factor = 4
    # grow_root is the positive control: B x sqrt(k) at fixed eta cools by
    # 2 where the others cool by 4, which the comparison must detect.
    config.cooling.schedules = ("decay", "grow", "hybrid", "grow_root")
    config.cooling.seeds = (0, 1, 2, 3, 4)
    # "population": each schedule's seeds train as one population, fed
    # and scheduled as the trainer would (the same curves to float32
    # rounding, several times faster); "trainer": one trainer run each
    # (any model: batch norm, weight decay, several replicas).
    config.cooling.runner = "population"
    return config
