"""Fault points: the places where a test may stop the process.

The reliability tests prove that a run killed anywhere resumes to the same
result. Killing from outside at a random time would test a random point;
like Keras' `BackupAndRestore` tests (which raise from a callback at a
chosen epoch), the trainer instead calls `point(name, step)` where a stop
matters, and a test installs a hook that acts there
(`tests/fault_injection.py`: it sends the process a real signal, or raises
"no space left on device"). Without a hook every call does nothing.

Points: `train_step` (after a host call of the training loop),
`epoch_trained` (the epoch's last step done, not evaluated yet),
`evaluating` (evaluation done, nothing of the epoch recorded yet),
`recorded` (the epoch's checkpoint and then its rows written),
`checkpoint_saved` (right after a checkpoint is written). The training
input pipeline also asks the hook for a step whose batch it should hold
back (`input_stall_step`), and then calls `stall()` in its own thread: an
input that is slow to come, which a stop must still end within seconds.
"""

POINTS = ("train_step", "epoch_trained", "evaluating", "recorded",
          "checkpoint_saved", "input_stall")

_hook = None


def install(hook):
    """Makes `hook` act at every point of this process; `None` removes it.

    `hook` has `point(name, step)`, `input_stall_step()` (a step or None)
    and `stall()`; see `tests/fault_injection.py`. Returns the previous
    hook."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def point(name, step):
    """Marks that the run reached `name` at `step` (the hook may stop the
    process here)."""
    if _hook is not None:
        _hook.point(name, step)


def input_stall_step():
    """The step whose batch the input pipeline holds back, or None."""
    return None if _hook is None else _hook.input_stall_step()


def stall():
    """Holds the input pipeline's thread as the hook says."""
    _hook.stall()
