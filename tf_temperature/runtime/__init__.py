"""What every pipeline needs around its computation, whatever it computes.

* `io`: files on any filesystem TensorFlow reads (local, `gs://`, `ram://`),
  written atomically.
* `workdir`: a run's directory: the lock, the config it was made with, and
  the refusal of another pipeline's or another config's directory.
* `rerun`: whether a rerun resumes, is already complete, or is refused.
* `progress`: the one-line progress and time estimate.
* `signals`: how a stop (SIGTERM, SIGINT) becomes a clean exit.
* `faults`: the points where a test may kill the process.
"""
