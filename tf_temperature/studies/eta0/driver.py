"""keras-tuner as the study's search driver: its oracles, its tuner, and
the repairs keras-tuner 1.4 needs to resume a search safely.

* `EtaTuner`: a `keras_tuner.Tuner` whose trial is `Search.run_trial`
  (one `(B, eta0)`, all seeds); its score is the seed median.
* `GridOracle`: every combination once, in order, resumable.
* `TrialError`: a trial that raised stops the search, instead of being
  marked failed for good; `retry_failed` sends trials an older run marked
  failed back to the queue.
* keras-tuner's JSON state files are written atomically, and a damaged
  or missing one is rebuilt from the trials before keras-tuner reloads
  it (`search_state`).
"""

import contextlib
import io as _io
import json
import os

import keras_tuner
from keras_tuner.src.distribute import utils as dist_utils

from tf_temperature.runtime import io
from tf_temperature.studies.eta0 import search_state

SCORE = "score"


def _save_json_atomically(path, obj):
    """keras-tuner's `utils.save_json`, written beside and renamed: its
    own write, cut by a full disk or a kill, leaves a truncated
    `oracle.json` that no rerun can reload."""
    text = json.dumps(obj)
    io.write_text(path, text)
    return text


# keras-tuner 1.4's state files (oracle, trials, tuner) all go through it.
keras_tuner.src.utils.save_json = _save_json_atomically


def check_oracle_address():
    """Raises `ValueError` naming the variable if keras-tuner's chief
    could not bind, or its workers reach, `KERASTUNER_ORACLE_IP` and
    `KERASTUNER_ORACLE_PORT` (set: a parallel search).

    gRPC takes `HOST:PORT`, so an IPv6 literal (`::1`) is bracketed here
    (`[::1]`), in the environment keras-tuner reads.
    """
    import ipaddress
    import socket

    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return
    host = os.environ["KERASTUNER_ORACLE_IP"].strip()
    port = os.environ.get("KERASTUNER_ORACLE_PORT", "")
    if not host:
        raise ValueError(
            "`KERASTUNER_ORACLE_IP` must name the chief's address (an IPv4 "
            "or IPv6 address, or a host name). Received: "
            "KERASTUNER_ORACLE_IP=''")
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(
            "`KERASTUNER_ORACLE_PORT` must be a port number in [1, 65535]. "
            f"Received: KERASTUNER_ORACLE_PORT={port!r}")
    bare = host.strip("[]")
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ValueError(
                "`KERASTUNER_ORACLE_IP` must be an IPv4 or IPv6 address or a "
                f"host name. Received: KERASTUNER_ORACLE_IP={host!r}") from None
        os.environ["KERASTUNER_ORACLE_IP"] = f"[{bare}]"
    if dist_utils.is_chief_oracle():
        # gRPC's own failure to bind is a traceback from keras-tuner's
        # server thread: try the address first.
        family = socket.AF_INET6 if ":" in bare else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((bare, int(port)))
        except OSError as error:
            raise ValueError(
                f"the chief cannot listen on KERASTUNER_ORACLE_IP={host!r}, "
                f"KERASTUNER_ORACLE_PORT={port!r}: {error.strerror or error}"
                "; give an address of this machine and a free port") from None


class TrialError(keras_tuner.errors.FatalError):
    """A trial raised: the search stops (keras-tuner would otherwise mark
    the trial failed for good and go on); the trial stays planned and is
    run again by the next run. The trial's own error is `__cause__`."""


def retry_failed(oracle):
    """Sends trials an earlier run ended as failed or invalid back to the
    retry queue (keras-tuner 1.4 never retries them after a reload)."""
    status = keras_tuner.engine.trial.TrialStatus
    for trial_id, trial in oracle.trials.items():
        if trial.status in (status.FAILED, status.INVALID) and (
                trial_id not in oracle._retry_queue):
            oracle._retry_queue.append(trial_id)
            oracle._run_times[trial_id] = 0
            if trial_id in oracle.end_order:
                oracle.end_order.remove(trial_id)


class GridOracle(keras_tuner.Oracle):
    """Every combination once, in order, and resumable.

    keras-tuner 1.4.8's `GridSearchOracle` keeps its place in the grid only
    in memory: reloaded after an interruption, it fails with a `KeyError`
    on the retried trial's id (keras-tuner issue 1055). This subclass uses
    keras-tuner's private `engine.trial` API, hence the pin below 1.5 in
    setup.py. This oracle derives its place from the
    tried values, which the base `Oracle` saves.
    """

    def __init__(self, objective, hyperparameters, combinations):
        super().__init__(objective=objective,
                         max_trials=len(combinations),
                         hyperparameters=hyperparameters)
        self.combinations = combinations

    def populate_space(self, trial_id):
        del trial_id
        for values in self.combinations:
            if not self._duplicate(values):
                return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING,
                        "values": dict(values)}
        return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED,
                "values": None}

    def reload(self):
        """keras-tuner's reload; room is then made for the combinations
        not tried yet (keras-tuner stops at `max_trials` trials, and a
        repaired project's placeholders count as trials)."""
        super().reload()
        self.max_trials = len(self.trials) + sum(
            not self._duplicate(values) for values in self.combinations)


class EtaTuner(keras_tuner.Tuner):
    """A keras-tuner `Tuner` whose trials are training-pipeline runs (of
    the search's `stage`: "coarse", or "fine" for the second grid).

    Args:
        run_trial: `run_trial(mode, project, trial_id, values, stage)`
            trains one trial and returns its record (a dict with
            "objective"); the tuner knows nothing else of the study.
        workdir: the study's directory (`keras_tuner/` and `trials/` in it).
        mode, project, oracle, stage: the search's mode, keras-tuner
            project name, oracle and stage.
        repaired: whether `search_state` repaired this project's trial
            files before this run (its oracle state is then rebuilt).
    """

    def __init__(self, run_trial, workdir, mode, project, oracle,
                 stage="coarse", repaired=False):
        self._run, self.workdir = run_trial, workdir
        self.mode, self.stage = mode, stage
        tuner_dir = io.join(workdir, "keras_tuner")
        if not (dist_utils.has_chief_oracle()
                and not dist_utils.is_chief_oracle()):  # Owns the oracle.
            project_dir = io.join(tuner_dir, project)
            tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
            search_state.rebuild_oracle(
                oracle, project_dir, io.join(project_dir, f"{tuner_id}.json"),
                changed=repaired)
        # keras-tuner prints "Reloading Tuner from ..." on a resume; the
        # study's own "resuming: ..." (or "... already complete") says it.
        with contextlib.redirect_stdout(_io.StringIO()):
            # keras-tuner globs its directory when it reloads.
            super().__init__(oracle=oracle,
                             directory=io.literal(tuner_dir),
                             project_name=project, overwrite=False)
        if isinstance(self.oracle, keras_tuner.Oracle):  # Not a client.
            retry_failed(self.oracle)

    def run_trial(self, trial, *args, **kwargs):
        del args, kwargs
        try:
            record = self._run(self.mode, self.project_name,
                               trial.trial_id, trial.hyperparameters.values,
                               self.stage)
        except Exception as error:  # noqa: BLE001 -- see TrialError.
            raise TrialError(f"trial {self.project_name}/{trial.trial_id}: "
                             f"{error}") from error
        return {SCORE: record["objective"]}

    def missing(self):
        """This project's trials that ended without a record (not the
        placeholders of lost trials, whose values were tried again)."""
        done = keras_tuner.engine.trial.TrialStatus.COMPLETED
        return [f"{self.project_name}/{trial_id}"
                for trial_id, trial in sorted(self.oracle.trials.items())
                if trial.status != search_state.PLACEHOLDER and (
                    trial.status != done or not io.exists(io.join(
                        self.workdir, "trials", self.project_name,
                        f"trial_{trial_id}", "record.json")))]


def objective():
    """The score keras-tuner minimizes: the trial's seed median."""
    return keras_tuner.Objective(SCORE, direction="min")


def hyperparameters(batch_sizes, eta0s=None, eta0_range=None):
    """A trial's hyperparameters: `batch_size` and `eta0` (a grid, or a
    log-uniform range for the bayesian oracle)."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("batch_size", list(batch_sizes), ordered=True)
    if eta0_range:
        hp.Float("eta0", eta0_range[0], eta0_range[1], sampling="log")
    else:
        hp.Choice("eta0", list(eta0s), ordered=True)
    return hp


def per_batch_oracle(mode, tune, batch, grid, seed):
    """keras-tuner's bayesian or hyperband oracle over eta0 at one B."""
    if mode == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            objective=objective(), max_trials=tune.max_trials, seed=seed,
            hyperparameters=hyperparameters(
                [batch], eta0_range=(min(grid), max(grid))))
    return keras_tuner.oracles.HyperbandOracle(
        objective=objective(), max_epochs=tune.epochs,
        factor=tune.hyperband_factor, hyperband_iterations=1, seed=seed,
        hyperparameters=hyperparameters([batch], grid))
