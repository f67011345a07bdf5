"""Decay the rate, or grow the batch? Smith et al. 2018's experiment.

The lecture's temperature is `eta / B`. Smith, Kindermans, Ying and Le
(2018, "Don't Decay the Learning Rate, Increase the Batch Size") cool SGD
by growing `B` where a schedule would shrink `eta`: the same temperature
path, the same training curve in epochs, fewer and larger steps. Three
schedules cool by the factor `k = cooling.factor` at each of
`optimizer.boundaries_epochs`:

* `decay`: `eta / k` at fixed `B` (the reference);
* `grow`: `B * k` at fixed `eta` (`optimizer.batch_growth`);
* `hybrid`: `B * sqrt(k)` and `eta / sqrt(k)`, part of the cooling by
  each knob;
* `grow_root`, the positive control: `B * sqrt(k)` at fixed `eta`, a
  temperature path that differs (it cools by `sqrt(k)` where the others
  cool by `k`). The paired comparison must find it different, or a match
  of the others would mean nothing.

Every schedule runs with every seed of `cooling.seeds`, each run in its
own directory under `runs/` with the files a trainer run writes: by
default the seeds train as the copies of one population, fed, scheduled
and started as their trainer runs, to the same numbers to float32
rounding (`copies`); `cooling.runner = "trainer"` trains each through the
trainer (`training.trainer`, resumable from its checkpoints, any model).
A seed gives the same initial weights and the same first phase in all, so
the comparison is paired: for each seed, the schedule's value minus the
decay's, and over seeds a Student-t 95% interval of that difference, at
the last epoch and at every epoch. The epochs before the first switch are
the same run in every schedule, so the count of epochs whose interval
excludes 0 (which 95% intervals give by chance at 1 in 20) is over the
epochs after it; the first epoch after the switch, where a schedule's
transient shows, is reported on its own. A run that diverged is named and
left out of the comparison, never counted as a result.
"""

import math
import time

import numpy as np
import pandas as pd
from scipy import stats

from tf_temperature import _validation
from tf_temperature.runtime import io, progress, rerun, signals
from tf_temperature.runtime import workdir as workdir_lib
from tf_temperature.studies import _tracing, experiment_state
from tf_temperature.studies.cooling import copies
from tf_temperature.training import experiment, trainer

SCHEDULES = ("decay", "grow", "hybrid", "grow_root")
# Schedules whose temperature path is decay's (the others are controls).
SAME_PATH = ("decay", "grow", "hybrid")
FILES = ("curves.csv", "cooling.json", "cooling.png")
# The measures compared between schedules, at each epoch.
MEASURES = (("train", "loss"), ("eval", "error"), ("eval", "loss"))
MIN_SEEDS = 3


def check_config(config):
    """Raises `ValueError` naming the first bad field (nothing written)."""
    experiment.check_config(config)
    experiment.refuse_batch_growth(config, "the cooling experiment")
    copies.check_config(config)
    cooling = config.cooling
    factor = _validation.positive_integer("cooling.factor", cooling.factor)
    names = tuple(cooling.schedules)
    for name in names:
        _validation.one_of("cooling.schedules", name, SCHEDULES)
    if "decay" not in names or len(set(names)) != len(names) or len(
            names) < 2:
        raise ValueError(
            "`cooling.schedules` must name 'decay' (the reference) and at "
            f"least one other of {SCHEDULES}, each once. Received: "
            f"cooling.schedules={names!r}")
    rooted = {"hybrid", "grow_root"} & set(names)
    if factor < 2 or (rooted and math.isqrt(factor) ** 2 != factor):
        raise ValueError(
            "`cooling.factor` must be an integer >= 2, and a square with "
            "the 'hybrid' or 'grow_root' schedule (they use its root). "
            f"Received: cooling.factor={cooling.factor!r}")
    experiment.check_seeds("cooling.seeds", cooling.seeds, MIN_SEEDS,
                           "the intervals are over seeds")
    if not len(config.optimizer.boundaries_epochs):
        raise ValueError(
            "`optimizer.boundaries_epochs` must name the epochs where the "
            "schedules cool. Received: optimizer.boundaries_epochs=()")


def schedule_changes(config, name):
    """The config changes that make schedule `name` from `config`."""
    k = config.cooling.factor
    count = len(config.optimizer.boundaries_epochs)
    root = math.isqrt(k)
    changes = {"decay": {"optimizer.decay": "piecewise",
                         "optimizer.decay_rate": 1.0 / k,
                         "optimizer.batch_growth": ()},
               "grow": {"optimizer.decay": "constant",
                        "optimizer.batch_growth": (k,) * count},
               "hybrid": {"optimizer.decay": "piecewise",
                          "optimizer.decay_rate": 1.0 / root,
                          "optimizer.batch_growth": (root,) * count},
               "grow_root": {"optimizer.decay": "constant",
                             "optimizer.batch_growth": (root,) * count}
               }[name]
    return {**changes, "optimizer.batch_growth_eta": "constant"}


def plan(config):
    """`[(schedule, seed, run config)]`, schedule by schedule."""
    return [(name, seed, experiment.variant(config, {
        **schedule_changes(config, name), "seed": int(seed)}))
            for name in config.cooling.schedules
            for seed in config.cooling.seeds]


def is_finished(workdir):
    """Whether `workdir` holds a finished experiment (of any config): its
    `config.json`, written last."""
    return bool(workdir) and io.exists(io.join(workdir, "config.json"))


def _finished(config, workdir, say):
    """`(curves, report)` of a finished experiment of this config in
    `workdir`, or None (not finished, or a result file missing or damaged:
    named in one warning, and the report is rebuilt from `runs/`).

    Raises:
        workdir.WorkdirError: the workdir holds a finished experiment of
            another config, or a `config.json` that does not parse.
    """
    found = experiment_state.stored_results(
        config, workdir, "cooling experiment", say, tables={"curves.csv": (
            "schedule", "seed", "epoch", "split", "loss", "error")},
        records={"cooling.json": ("schedules", "epochs")},
        figures=("cooling.png",))
    if found is None:
        return None
    report = found["cooling.json"]
    # JSON keeps the keys sorted: the schedules go back to the config's
    # order, the order of a fresh report (and of its lines).
    report["schedules"] = {name: report["schedules"][name] for name in
                           config.cooling.schedules
                           if name in report["schedules"]}
    return found["curves.csv"], report


def run_experiment(config, workdir, print_fn=print):
    """Trains every (schedule, seed) of `plan` and compares the schedules.

    Writes in `workdir`: `runs/<schedule>_seed<seed>/` (each run's
    `metrics.csv`, `summary.json` and `config.json`; a rerun keeps the
    finished ones and trains the rest: trainer runs resume from their
    checkpoints, a population trains the schedules not all written from
    their start; one whose files are torn or garbage is named in a warning
    and redone), `curves.csv` (every run's `metrics.csv` rows),
    `cooling.json` (`compare`'s report), `cooling.png` and, last,
    `config.json`. A rerun on a finished workdir says so and returns what
    it found, training nothing; another config is refused. The workdir is
    held (`workdir.RunLock`) while the experiment runs.

    Returns:
        `(curves, report)`.

    Raises:
        ValueError: bad input, before anything is written (also a workdir
            of another pipeline, of a finished experiment of another
            config, or in use by another run).
    """
    say = print_fn or (lambda _: None)
    check_config(config)
    workdir_lib.check_workdir(workdir, (*FILES, "config.json"), ("runs",))
    workdir_lib.refuse_foreign(workdir, "cooling")
    _tracing.expect_new_functions()  # A loop per run and phase.
    setup = experiment.Experiment(config)
    runs = plan(config)
    for _, _, run in runs:
        setup.check_run(run)
    source = setup.source()
    num_train = source.num_train
    if config.cooling.runner == "population":
        copies.check_setup(setup, runs, source)
    steps = {name: experiment.batch_schedule(run, num_train).start_step(
        run.num_epochs) for name, _, run in runs}
    with workdir_lib.RunLock(workdir):
        found = _finished(config, workdir, say)
        if found is not None:
            say(f"cooling: {workdir} is already complete (run with this "
                "config): nothing to run; it found:")
            return found
        say(f"cooling: {len(config.cooling.schedules)} schedules x "
            f"{len(config.cooling.seeds)} seeds = {len(runs)} runs of "
            f"{config.num_epochs} epochs, cooled x{config.cooling.factor} "
            f"at epochs {tuple(config.optimizer.boundaries_epochs)}; steps "
            "per run: " + ", ".join(f"{n} {s}" for n, s in steps.items()))
        meter = progress.Progress([steps[name] for name, _, _ in runs],
                                  print_fn=say)
        frames, failed = [], []
        for name, seed, summary, frame, took in _results(
                config, runs, workdir, setup, say):
            if frame is None:
                failed.append((name, seed))
                text = f"{name} seed {seed}: DIVERGED (left out)"
            else:
                frames.append(frame.assign(schedule=name, seed=seed))
                text = (f"{name} seed {seed}: {summary['step']} steps, "
                        f"train loss {summary['final_train_loss']:.4f}, "
                        f"eval error {summary['final_eval_error']:.4f}")
            meter.step(steps[name], took, text)
        if not frames:
            raise trainer.DivergedError(
                f"every run of the cooling experiment diverged (eta0="
                f"{config.optimizer.eta0:.4g}); lower optimizer.eta0")
        curves = pd.concat(frames, ignore_index=True)
        report = compare(curves, steps, int(math.ceil(min(
            config.optimizer.boundaries_epochs))))
        report.update(factor=config.cooling.factor, diverged=[
            {"schedule": n, "seed": s} for n, s in failed])
        io.write_csv(io.join(workdir, "curves.csv"), curves)
        io.write_json(io.join(workdir, "cooling.json"), report)
        from tf_temperature.studies.cooling import figure as cooling_figure

        cooling_figure.save(curves, io.join(workdir, "cooling.png"))
        # Last: it marks the experiment finished (`_finished`).
        io.write_json(io.join(workdir, "config.json"), config.to_dict())
    return curves, report


def _run_dir(workdir, name, seed):
    return io.join(workdir, "runs", f"{name}_seed{seed}")


def _results(config, runs, workdir, setup, say):
    """`(schedule, seed, summary, metrics rows, seconds)` of every run of
    `runs`, in order, as each is trained or found (summary and rows None
    where it diverged): one trainer run each (`cooling.runner =
    "trainer"`), or every seed a copy of one population
    (`copies.CoolingCopies`, the default), each schedule's runs found
    finished in `workdir` kept."""
    if config.cooling.runner == "trainer":
        for name, seed, run in runs:
            began = time.perf_counter()
            summary, frame = _train_run(run, _run_dir(workdir, name, seed),
                                        setup, say)
            yield name, seed, summary, frame, time.perf_counter() - began
        return
    found = {(name, seed): _stored_copy(_run_dir(workdir, name, seed), run,
                                        say)
             for name, seed, run in runs}
    todo = [name for name in config.cooling.schedules
            if any(found[name, seed] is None
                   for seed in config.cooling.seeds)]
    trained = _train_schedules(setup, runs, todo, workdir, say)
    began = time.perf_counter()
    for name in config.cooling.schedules:
        if name in todo:
            found.update(next(trained))
        took = (time.perf_counter() - began) / len(config.cooling.seeds)
        for seed in config.cooling.seeds:
            yield (name, seed, *found[name, seed], took)
        began = time.perf_counter()


def _train_schedules(setup, runs, todo, workdir, say):
    """Trains the runs of the schedules `todo` as one population
    (`copies.CoolingCopies`) from their start, writing each run's
    directory as the trainer would; yields `{(schedule, seed): (summary,
    metrics rows or None if it diverged)}` as each schedule ends."""
    if not todo:
        return
    mine = {name: [(seed, run) for n, seed, run in runs if n == name]
            for name in todo}
    population = copies.CoolingCopies(setup, {
        name: [run for _, run in pairs] for name, pairs in mine.items()})
    for name, seed, _ in runs:
        run_dir = _run_dir(workdir, name, seed)
        if name in mine:
            if io.exists(io.join(run_dir, "checkpoints")):
                say(f"cooling: warning: {run_dir} holds an unfinished "
                    "trainer run; its schedule's population trains it "
                    "again from its start")
            experiment_state.redo(run_dir)
    for name, results in population.train():
        done = {}
        for index, ((seed, run), (rows, diverged)) in enumerate(zip(
                mine[name], results, strict=True)):
            summary = population.summary(name, index, rows, diverged)
            run_dir = _run_dir(workdir, name, seed)
            copies.write_run(run_dir, run, rows, summary)
            done[name, seed] = (summary, None if diverged else io.read_csv(
                io.join(run_dir, "metrics.csv")))
        yield done


def _stored_copy(run_dir, run, say):
    """`(summary, metrics rows)` of a finished run in `run_dir` (rows None
    if it diverged), or None: none, or damaged (named in a warning: the
    run is trained again).

    Raises:
        workdir.WorkdirError: the run was made with another config.
    """
    damage = experiment_state.run_damage(run_dir, run.num_epochs)
    if damage:
        say(f"cooling: warning: {damage[0]} {damage[1]}; that run is "
            "redone from its start")
        return None
    path = io.join(run_dir, "summary.json")
    if not io.exists(path):
        return None
    summary = io.read_json(path)
    rerun.refuse_other_config(run_dir, run)
    if summary.get("diverged"):
        return summary, None
    if summary.get("epochs") != run.num_epochs:
        return None
    return summary, io.read_csv(io.join(run_dir, "metrics.csv"))


def _train_run(run, run_dir, setup, say):
    """Trains (or resumes, or finds finished) one run: `(summary, its
    metrics.csv rows)`, or `(None, None)` if it diverged (also a run a
    population left diverged: it has no checkpoint to resume from). A run
    whose files are torn or garbage is named in one warning and redone
    from its start."""
    summary = io.join(run_dir, "summary.json")
    if (io.exists(summary) and not io.exists(io.join(run_dir, "checkpoints"))
            and not experiment_state.run_damage(run_dir, run.num_epochs)
            and io.read_json(summary).get("diverged")):
        rerun.refuse_other_config(run_dir, run)
        return None, None
    for _ in range(2):
        damage = experiment_state.run_damage(run_dir, run.num_epochs)
        if damage:
            say(f"cooling: warning: {damage[0]} {damage[1]}; that run is "
                "redone from its start")
            experiment_state.redo(run_dir)
        try:
            # A pipeline's signals (`runtime.signals.install`) stop a run
            # with a checkpoint; a library caller's stay its own.
            summary = trainer.train_and_evaluate(
                run, run_dir, None, setup=setup,
                handle_signals=signals.installed())
        except trainer.DivergedError:
            return None, None
        if not experiment_state.run_damage(run_dir, run.num_epochs):
            return summary, io.read_csv(io.join(run_dir, "metrics.csv"))
    path, what = experiment_state.run_damage(run_dir, run.num_epochs)
    raise workdir_lib.WorkdirError(
        f"`workdir` holds a run whose {path} {what} after it was redone; "
        f"check the file system, then rerun. Received: workdir={run_dir!r}")


def _paired(values):
    """Mean and Student-t 95% interval of paired differences."""
    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = (stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1)
            / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def compare(curves, steps, switch=0):
    """Each schedule against `decay`, paired by seed.

    Args:
        curves: rows of every run's `metrics.csv` with `schedule`, `seed`.
        steps: `{schedule: optimizer steps of a run}`.
        switch: the last epoch before the first cooling (the schedules'
            shared first phase); 0: none shared.

    Returns:
        dict: per schedule, `steps`, `steps_saved` (share of decay's),
        `same_path` (the temperature path is decay's; False for a control)
        and per measure (`train_loss`, `eval_error`, `eval_loss`): the
        final-epoch seed mean and spread, the paired difference from
        decay with its 95% interval, `max_gap_in_seed_sd` (the largest
        |mean difference| over the epochs, in units of decay's seed sd at
        that epoch), `match` (that gap is at most 1: the curves agree
        within the seed spread at every epoch), `epochs_differing` (the
        epochs after `switch` whose paired interval excludes 0: a
        difference the seeds detect, however small) out of
        `epochs_compared`, and `after_switch` (the paired difference and
        interval at epoch `switch + 1`); `seeds` used (where both runs
        finished); `detected` (the final paired interval excludes 0 for
        some measure).
    """
    last = int(curves["epoch"].max())
    report = {"epochs": last, "switch": int(switch), "schedules": {}}
    reference = curves[curves["schedule"] == "decay"]
    for name, frame in curves.groupby("schedule", sort=False):
        seeds = sorted(set(frame["seed"]) & set(reference["seed"]))
        entry = {"steps": steps[name],
                 "steps_saved": 1.0 - steps[name] / steps["decay"],
                 "same_path": name in SAME_PATH, "seeds": seeds}
        report["schedules"][name] = entry
        if len(seeds) < 2:
            entry["note"] = ("fewer than 2 seeds finished in both this "
                             "schedule and decay: not compared")
            continue
        for split, column in MEASURES:
            ours = _table(frame, split, column, seeds)
            theirs = _table(reference, split, column, seeds)
            final = ours[last]
            item = {"final_mean": float(final.mean()),
                    "final_seed_sd": float(final.std(ddof=1))}
            if name != "decay":
                diff, low, high = _paired(final - theirs[last])
                gaps = [_gap(ours[epoch] - theirs[epoch], theirs[epoch])
                        for epoch in ours.columns]
                later = [e for e in ours.columns if e > switch]
                outside = [int(epoch) for epoch in later
                           if not _holds_zero(ours[epoch] - theirs[epoch])]
                item.update(difference=diff, difference_low=low,
                            difference_high=high, max_gap_in_seed_sd=max(
                                gaps), match=bool(max(gaps) <= 1.0),
                            epochs_differing=outside,
                            epochs_compared=len(later))
                if switch + 1 in ours.columns:
                    after = ours[switch + 1] - theirs[switch + 1]
                    item["after_switch"] = dict(zip(
                        ("difference", "low", "high"), _paired(after),
                        strict=True))
            entry[f"{split}_{column}"] = item
        if name != "decay":
            entry["detected"] = any(
                not (entry[f"{s}_{c}"]["difference_low"] <= 0
                     <= entry[f"{s}_{c}"]["difference_high"])
                for s, c in MEASURES)
    return report


def _gap(differences, reference):
    """|mean paired difference| in units of the reference's seed sd."""
    size = abs(float(np.mean(differences)))
    spread = float(np.std(reference, ddof=1))
    if spread > 0:
        return size / spread
    return 0.0 if size == 0 else math.inf


def _holds_zero(values):
    _, low, high = _paired(values)
    return low <= 0 <= high or np.allclose(values, 0.0)


def _table(frame, split, column, seeds):
    """`[seed x epoch]` of `column` on `split`."""
    rows = frame[(frame["split"] == split) & frame["seed"].isin(seeds)]
    return rows.pivot(index="seed", columns="epoch", values=column).loc[
        seeds]


def summary_lines(report):
    """The report as lines for the terminal."""
    lines, last = [], report["epochs"]
    switch = report.get("switch", 0)
    for name, entry in report["schedules"].items():
        line = (f"{name:>9}: {entry['steps']} steps"
                + ("" if name == "decay" else
                   f" ({entry['steps_saved']:.0%} fewer than decay)")
                + ("" if entry.get("same_path", True) else
                   "; positive control (another temperature path)"))
        lines.append(line + (f"; {entry['note']}" if "note" in entry
                             else ""))
        for key in ("train_loss", "eval_loss", "eval_error"):
            if key not in entry:
                continue
            item = entry[key]
            text = (f"    epoch {last} {key.replace('_', ' ')} "
                    f"{item['final_mean']:.4g} (seed sd "
                    f"{item['final_seed_sd']:.2g})")
            if name != "decay":
                text += (f"; minus decay's {item['difference']:+.2e} "
                         f"[{item['difference_low']:+.2e}, "
                         f"{item['difference_high']:+.2e}]")
                lines.append(text)
                after = item.get("after_switch")
                compared, gap = (item["epochs_compared"],
                                 item["max_gap_in_seed_sd"])  # JSON: inf null
                text = (f"      largest gap over the epochs "
                        f"{math.inf if gap is None else gap:.2f} seed sd -> "
                        + ("within the seed spread" if item["match"]
                           else "OUTSIDE the seed spread")
                        + "; paired intervals excluding 0 at "
                        f"{len(item['epochs_differing'])}/{compared} epochs "
                        f"after epoch {switch} (by chance about "
                        f"{0.05 * compared:.2g})"
                        + (f"; epoch {switch + 1}: "
                           f"{after['difference']:+.2e} "
                           f"[{after['low']:+.2e}, {after['high']:+.2e}]"
                           if after else ""))
            lines.append(text)
        if not entry.get("same_path", True) and "detected" in entry:
            lines.append(
                "    positive control " + ("detected: the paired intervals "
                                           "at the last epoch exclude 0"
                                           if entry["detected"] else
                                           "NOT detected: the comparison "
                                           "cannot see this difference"))
    if report.get("diverged"):
        lines.append("diverged (left out): " + ", ".join(
            f"{d['schedule']} seed {d['seed']}" for d in report["diverged"]))
    return lines
