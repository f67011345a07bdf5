"""Any filesystem: a `ram://` workdir (like `gs://`, not a local path) holds
the whole run, search and study, each equal to the same on a local
directory, and nothing is written under the current directory."""

import os

import pandas as pd
import pytest
import tensorflow as tf
from conftest import override, tiny_config

from tf_temperature.runtime import io, workdir
from tf_temperature.training import trainer


@pytest.fixture
def in_empty_cwd(tmp_path, monkeypatch):
    """Runs the test in an empty current directory; checks it stays so."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert os.listdir(cwd) == []


@pytest.fixture(autouse=True)
def ram_writes_replace(monkeypatch):
    """TensorFlow 2.21's `ram://` opens an existing file for writing
    without truncating it ("hello world" then "hi" reads "hello worldhi"),
    unlike `gs://`, where a write replaces the object. keras-tuner rewrites
    its JSON files in place; here they get gs://'s semantics."""
    real = tf.io.gfile.GFile

    def gfile(name, mode="r"):
        if (str(name).startswith("ram://") and "w" in mode
                and tf.io.gfile.exists(name)):
            tf.io.gfile.remove(name)
        return real(name, mode)

    monkeypatch.setattr(tf.io.gfile, "GFile", gfile)


def ram(name):
    path = f"ram://{name}"
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    return path


def frame(path):
    return io.read_csv(path).drop(columns=["wall_time"])


def test_io_round_trips_and_atomic_writes():
    root = ram("io")
    io.write_json(io.join(root, "a", "b.json"), {"x": [1, 2]})
    assert io.read_json(io.join(root, "a", "b.json")) == {"x": [1, 2]}
    io.write_text(io.join(root, "a", "b.json"), "{}")
    assert io.glob(root, "*/*") == [f"{root}/a/b.json"]
    assert not io.exists(io.join(root, "a", "b.json.tmp"))
    assert io.is_local("/tmp/x") and not io.is_local(root)
    assert io.is_object_store("gs://b/x") and not io.is_object_store(root)


def test_train_stop_resume_on_ram_equals_local(tmp_path, in_empty_cwd):
    local = str(tmp_path / "local")
    remote = ram("runs/train")
    expected = trainer.train_and_evaluate(tiny_config(num_epochs=3), local)
    first = trainer.train_and_evaluate(tiny_config(num_epochs=2), remote)
    assert first["step"] == 44
    resumed = trainer.train_and_evaluate(tiny_config(num_epochs=3), remote)
    assert resumed["all_weights"] == expected["all_weights"]
    assert resumed["final_eval_loss"] == expected["final_eval_loss"]
    pd.testing.assert_frame_equal(frame(f"{remote}/metrics.csv"),
                                  frame(f"{local}/metrics.csv"))
    names = set(tf.io.gfile.listdir(remote))
    assert {"checkpoints", "config.json", "metrics.csv", "summary.json",
            "tensorboard"} <= {n.rstrip("/") for n in names}
    assert not io.exists(f"{remote}/.lease")  # Released at the end.


def test_ram_workdir_lease_names_the_live_holder():
    remote = ram("runs/lease")
    io.write_text(f"{remote}/.lease", "pid 1 on some-other-host")
    with pytest.raises(workdir.WorkdirInUseError,
                       match=r"in use by another run \(pid 1 on "
                             r"some-other-host\); wait for it, or delete "
                             r"ram://runs/lease/\.lease"):
        trainer.train_and_evaluate(tiny_config(num_epochs=1), remote)
    # A dead process of this host: the lease is taken over.
    import socket

    io.write_text(f"{remote}/.lease",
                  f"pid 999999999 on {socket.gethostname()}")
    assert trainer.train_and_evaluate(tiny_config(num_epochs=1),
                                      remote)["step"] == 22


def tune_config():
    from configs import tune_digits

    config = tune_digits.get_config()
    return override(config, {
        "model.family": "linear", "num_epochs": 1, "tune.epochs": 1,
        "tune.batch_sizes": (64, 128),
        "tune.eta0_values": (1e-3, 2e-3, 4e-3),
        "tune.seeds": (0,), "tune.bootstrap_samples": 100,
        "optimizer.warmup_epochs": 0.0, "optimizer.boundaries_epochs": (),
        "optimizer.momentum": 0.0,
    })


@pytest.mark.slow
def test_search_interrupted_and_resumed_on_ram_equals_local(
        tmp_path, in_empty_cwd, monkeypatch):
    from tf_temperature.studies.eta0 import tuning

    local = str(tmp_path / "local")
    tuning.Search(tune_config(), local, print_fn=None).run()
    remote = ram("studies/tune")
    search = tuning.Search(tune_config(), remote, print_fn=None)
    real = search.run_trial
    calls = []

    def interrupted(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # The third trial never finishes.
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(search, "run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    assert len(io.glob(remote, "trials/*/trial_*/record.json")) == 2
    tuning.Search(tune_config(), remote, print_fn=None).run()
    columns = ["batch_size", "eta0", "seed", "objective", "diverged"]
    ours = io.read_csv(f"{remote}/trials.csv")[columns]
    theirs = io.read_csv(f"{local}/trials.csv")[columns]
    pd.testing.assert_frame_equal(
        ours.sort_values(columns[:3]).reset_index(drop=True),
        theirs.sort_values(columns[:3]).reset_index(drop=True))
    assert io.read_json(f"{remote}/verdict.json")["text"] == io.read_json(
        f"{local}/verdict.json")["text"]
    for name in ("eta0_by_batch.csv", "eta0_vs_batch.png"):
        assert io.exists(f"{remote}/{name}")
    assert tf.io.gfile.isdir(f"{remote}/keras_tuner")


@pytest.mark.slow
def test_equilibrium_study_on_ram_equals_local(tmp_path, in_empty_cwd):
    from configs import equilibrium_digits
    from tf_temperature.studies.equilibrium import experiment as equilibrium

    def config():
        return override(equilibrium_digits.get_config(), {
            "equilibrium.etas": (0.4,), "equilibrium.eta": 0.4,
            "equilibrium.batch_sizes": (64,), "equilibrium.sgd_time": 8.0,
            "equilibrium.min_epochs": 2, "equilibrium.schedule_cuts": 1,
            "equilibrium.momenta": (0.0,), "equilibrium.seeds": 2})

    local, _ = equilibrium.run_experiment(config(), str(tmp_path / "local"),
                                          None)
    remote = ram("studies/equilibrium")
    table, _ = equilibrium.run_experiment(config(), remote, None)
    pd.testing.assert_frame_equal(table, local)
    pd.testing.assert_frame_equal(io.read_csv(f"{remote}/equilibrium.csv"),
                                  io.read_csv(str(tmp_path / "local"
                                                  / "equilibrium.csv")))
    assert io.read_bytes(f"{remote}/equilibrium.png")[:4] == b"\x89PNG"
