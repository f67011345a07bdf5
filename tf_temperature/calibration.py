"""Calibration temperature: temperature scaling (Guo et al. 2017).

Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017): a
network's confidence (its top softmax probability) often exceeds its
accuracy; dividing the logits by one temperature `T > 1`, fitted on held-out
data by minimizing the negative log-likelihood, repairs most of it without
changing any prediction (the argmax is the same at every `T`). It is the
softmax temperature of `TemperatureSoftmax`, measured after training.

The fit is one-dimensional and convex in `beta = 1 / T`:
`NLL(beta) = mean(logsumexp(beta z) - beta z_y)` has derivative
`mean(E_p[z] - z_y)` and second derivative `mean(Var_p[z]) >= 0`, so
Newton's method on `beta` (float64, with a step halving that never lets
the NLL rise) converges in a handful of steps; no optimizer to tune.

The expected calibration error (ECE) bins examples by confidence into
`num_bins` equal-width bins on [0, 1] and averages |accuracy - confidence|
over the bins, weighted by their share of examples (Guo et al., Eq. 3,
with 15 bins as in their tables).
"""

import numpy as np

from tf_temperature import _validation


def _logsumexp(values):
    """Row-wise `log sum exp` (float64), stable for any magnitude."""
    top = values.max(axis=1)
    return top + np.log(np.sum(np.exp(values - top[:, None]), axis=1))


def _check_inputs(logits, labels):
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(
            "`logits` must have shape [examples, classes >= 2]. Received: "
            f"logits.shape={logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"`labels` must have shape ({logits.shape[0]},), one per row "
            f"of logits. Received: labels.shape={labels.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("`logits` must be finite. Received: logits with "
                         f"{int(np.sum(~np.isfinite(logits)))} non-finite "
                         "values")
    if (labels.dtype.kind not in "iu" or labels.min() < 0
            or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"`labels` must be integers in [0, {logits.shape[1]}). "
            f"Received: labels from {int(labels.min())} to "
            f"{int(labels.max())}")
    return logits, labels.astype(np.int64)


def negative_log_likelihood(logits, labels, temperature=1.0):
    """Mean `-log softmax(logits / T)[label]`."""
    logits, labels = _check_inputs(logits, labels)
    _validation.positive_number("temperature", temperature)
    scaled = logits / temperature
    picked = scaled[np.arange(len(labels)), labels]
    return float(np.mean(_logsumexp(scaled) - picked))


def fit_temperature(logits, labels, max_iterations=100, tolerance=1e-10):
    """The `T` minimizing the NLL of `softmax(logits / T)` on `labels`.

    Args:
        logits: `[examples, classes]` array of logits (held-out data).
        labels: `[examples]` integer class labels.
        max_iterations: Newton steps at most.
        tolerance: stop when a step changes `beta = 1 / T` by less.

    Returns:
        The fitted temperature (float). `T > 1` softens an over-confident
        model, `T < 1` sharpens an under-confident one.

    Raises:
        ValueError: for bad logits or labels, or when the NLL has no
            minimum at a finite `T > 0` (every example classified correctly:
            sharpening forever lowers it; or labels no likelier than
            average: softening forever does).
    """
    logits, labels = _check_inputs(logits, labels)
    picked = logits[np.arange(len(labels)), labels]

    def nll_and_derivatives(beta):
        scaled = beta * logits
        log_z = _logsumexp(scaled)
        p = np.exp(scaled - log_z[:, None])
        mean_z = np.sum(p * logits, axis=1)
        var_z = np.sum(p * logits**2, axis=1) - mean_z**2
        nll = np.mean(log_z - beta * picked)
        return nll, np.mean(mean_z - picked), np.mean(np.maximum(var_z, 0))

    # A finite minimum exists iff the NLL rises at both ends: as beta ->
    # inf it grows like beta * mean(max z - z_y), which needs one example
    # whose label logit is below its row's max; near beta = 0 its slope is
    # mean(mean(z) - z_y), which must be negative.
    margins = logits.max(axis=1) - picked
    if not np.any(margins > 0):
        raise ValueError(
            "`logits` have no calibration temperature: every example is "
            "classified correctly, so the likelihood keeps rising as T goes "
            f"to 0. Received: {len(labels)} examples, none misclassified")
    if np.mean(logits.mean(axis=1) - picked) >= 0:
        raise ValueError(
            "`logits` have no calibration temperature: the labels' logits "
            "are not above average, so the likelihood keeps rising as T "
            f"goes to infinity. Received: {len(labels)} examples")
    beta = 1.0
    nll, gradient, curvature = nll_and_derivatives(beta)
    for _ in range(max_iterations):
        step = gradient / max(curvature, 1e-300)
        # Halve the step until the NLL does not rise and beta stays > 0.
        while step and not (beta - step > 0
                            and (new := nll_and_derivatives(beta - step))[0]
                            <= nll + 1e-15):
            step = step / 2.0 if abs(step) > 1e-300 else 0.0
        if not step:
            break
        beta -= step
        nll, gradient, curvature = new
        if abs(step) < tolerance * beta:
            break
    return float(1.0 / beta)


def expected_calibration_error(logits, labels, temperature=1.0,
                               num_bins=15):
    """ECE of `softmax(logits / T)` with `num_bins` equal-width bins.

    Returns:
        `sum_b (n_b / n) |accuracy_b - confidence_b|`, in [0, 1].
    """
    table = reliability_table(logits, labels, temperature, num_bins)
    weights = table["count"] / max(table["count"].sum(), 1)
    return float(np.sum(weights * np.abs(table["accuracy"]
                                          - table["confidence"])))


def reliability_table(logits, labels, temperature=1.0, num_bins=15):
    """Per confidence bin: count, mean confidence, accuracy (NaN if empty).

    Returns:
        A dict of arrays `lower`, `upper`, `count`, `confidence`,
        `accuracy`, each of length `num_bins` (empty bins have count 0 and
        contribute nothing to the ECE).
    """
    logits, labels = _check_inputs(logits, labels)
    _validation.positive_number("temperature", temperature)
    _validation.positive_integer("num_bins", num_bins)
    scaled = logits / temperature
    probabilities = np.exp(scaled - _logsumexp(scaled)[:, None])
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Bins are (lower, upper], the first one [0, upper].
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0,
                    num_bins - 1)
    count = np.bincount(index, minlength=num_bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean_confidence = (np.bincount(index, confidence, num_bins)
                           / np.where(count, count, np.nan))
        accuracy = (np.bincount(index, correct.astype(np.float64), num_bins)
                    / np.where(count, count, np.nan))
    return {"lower": edges[:-1], "upper": edges[1:], "count": count,
            "confidence": np.nan_to_num(mean_confidence),
            "accuracy": np.nan_to_num(accuracy)}


def calibrate(logits, labels, num_bins=15):
    """Fits `T` and reports the NLL and ECE before and after.

    Returns:
        `{"temperature", "nll_before", "nll_after", "ece_before",
        "ece_after", "examples"}` (floats, and an int).
    """
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "nll_before": negative_log_likelihood(logits, labels),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "ece_before": expected_calibration_error(logits, labels, 1.0,
                                                 num_bins),
        "ece_after": expected_calibration_error(logits, labels, temperature,
                                                num_bins),
        "examples": int(np.asarray(labels).shape[0]),
    }


# A bin holding fewer examples than this is drawn hatched and pale: its
# accuracy is too noisy to read a gap from (one example is 0 or 1).
THIN_BIN = 10


def reliability_figure(logits, labels, temperature=None, num_bins=15,
                       title=None):
    """A reliability diagram (Guo et al., Figure 1) as a `Figure`.

    Per confidence bin: the accuracy as a bar, the bin's mean confidence as
    a black tick, and the gap between them as a red segment from the one to
    the other (up when the bin is overconfident, down when underconfident),
    against the diagonal of perfect calibration; each bin's count is
    written at its foot, and bins with fewer than `THIN_BIN` examples are
    hatched. Before (T = 1) and, with `temperature`, after scaling. Drawn
    on a `matplotlib.figure.Figure`, so that matplotlib's global backend
    and pyplot's figure list are left alone (safe in notebooks).

    Returns:
        The `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    panels = [(1.0, "T = 1")]
    if temperature is not None:
        panels.append((temperature, f"T = {temperature:.3g}"))
    fig = Figure(figsize=(3.4 * len(panels), 4.3))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)
    width = 1.0 / num_bins
    for ax, (value, label) in zip(axes[0], panels, strict=True):
        table = reliability_table(logits, labels, value, num_bins)
        ece = expected_calibration_error(logits, labels, value, num_bins)
        centers = (table["lower"] + table["upper"]) / 2
        count = table["count"]
        accuracy, confidence = table["accuracy"], table["confidence"]
        full, thin = count >= THIN_BIN, (count > 0) & (count < THIN_BIN)
        ax.bar(centers[full], accuracy[full], width=width, color="C0",
               edgecolor="black", linewidth=0.5, label="accuracy")
        ax.bar(centers[thin], accuracy[thin], width=width, color="C0",
               alpha=0.35, hatch="///", edgecolor="black", linewidth=0.5,
               label=f"accuracy, bin of < {THIN_BIN} examples")
        filled = count > 0
        ax.vlines(centers[filled], accuracy[filled], confidence[filled],
                  colors="red", linewidth=2.0,
                  label="gap: accuracy to confidence")
        ax.scatter(centers[filled], confidence[filled], marker="_",
                   s=(72 * 3.0 * width) ** 2 / 2, color="black",
                   linewidths=1.5, zorder=3, label="mean confidence")
        for x, n in zip(centers[filled], count[filled], strict=True):
            ax.text(x, 0.01, f"{int(n)}", rotation=90, fontsize=6,
                    ha="center", va="bottom", color="white"
                    if n >= THIN_BIN else "black")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8,
                label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (bin counts at the foot)")
        ax.set_title(f"{label}: ECE {100 * ece:.2f}%", fontsize=9)
    axes[0][0].set_ylabel("accuracy")
    # One legend below the panels, off the data.
    handles, names = [], []
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels(),
                                strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=7,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    return fig


def plot_reliability(logits, labels, output, temperature=None,
                     num_bins=15, title=None):
    """Writes `reliability_figure(...)` as a PNG to `output` (a path or a
    binary file object)."""
    reliability_figure(logits, labels, temperature, num_bins,
                       title).savefig(output, format="png", dpi=100)
