r"""Coverage of the study's intervals on its known answer, as a table.

Runs the linear-regression study (`configs/tune_linear.py`) exactly in
NumPy for `--sets` disjoint sets of `--seeds` seeds, applies the study's
estimator to each set (the one-stage coarse grid, and the two stages the
study runs), and prints how often the per-B 95% intervals and the slope's
interval hold the closed form, the median bias and interval width
(`tf_temperature.studies.eta0.coverage`). docs/COVERAGE.md shows the table of
the default run. With `--output` it writes the table and the per-set rows
as CSV there (nothing is written without it).

    python tools/coverage.py [--sets=100] [--seeds=16] [--samples=1000] \
        [--span=0.5] [--output=runs/coverage] [--quiet]
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_SETS = flags.DEFINE_integer("sets", 100, "Disjoint seed sets.")
_SEEDS = flags.DEFINE_integer("seeds", 16, "Seeds per set (the study's).")
_SAMPLES = flags.DEFINE_integer("samples", 1000, "Bootstrap replicates per "
                                "set (the study's).")
_SPAN = flags.DEFINE_float("span", 0.5, "The fine grid's half width in "
                          "octaves (the study's tune.fine_span_octaves).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for coverage.csv "
                              "and coverage_sets.csv (created); none: no "
                              "file.")
_QUIET = flags.DEFINE_bool("quiet", False, "No header or progress lines.")


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    for name, flag, low in (("sets", _SETS, 1), ("seeds", _SEEDS, 2),
                            ("samples", _SAMPLES, 100)):
        if flag.value < low:
            print(f"error: `--{name}` must be an integer >= {low}. "
                  f"Received: --{name}={flag.value}", file=sys.stderr)
            return 2
    if not 0.125 <= _SPAN.value <= 4:
        print("error: `--span` must be between 0.125 and 4 octaves. "
              f"Received: --span={_SPAN.value}", file=sys.stderr)
        return 2
    from configs import tune_linear
    from tf_temperature.runtime import io, progress
    from tf_temperature.studies.eta0 import coverage, plan, tasks

    say = (lambda line: None) if _QUIET.value else print
    config = tune_linear.get_config()
    task = tasks.make_task(config)
    grid = plan.eta0_grid(config.tune)
    batches = tuple(int(b) for b in config.tune.batch_sizes)
    say(f"coverage: {_SETS.value} disjoint sets of {_SEEDS.value} seeds of "
        f"the linear-regression study (B = {', '.join(map(str, batches))}, "
        f"{len(grid)} coarse eta0 and a fine stage of +-{_SPAN.value:g} "
        f"octave), {_SAMPLES.value} "
        "bootstrap replicates each; simulating, then one line per 10 sets")
    started = time.perf_counter()
    chunks = [min(10, _SETS.value - k) for k in range(0, _SETS.value, 10)]
    meter = progress.Progress(chunks, print_fn=say)
    last = [started]

    def on_set(k):
        if (k + 1) % 10 and k + 1 < _SETS.value:
            return
        now = time.perf_counter()
        meter.step(chunks[meter.done], now - last[0], f"{k + 1} sets")
        last[0] = now

    table, per_set = coverage.measure(task, batches, grid, _SETS.value,
                                      _SEEDS.value, _SAMPLES.value,
                                      on_set=on_set, span=_SPAN.value)
    if _OUTPUT.value:
        io.makedirs(_OUTPUT.value)
        io.write_csv(io.join(_OUTPUT.value, "coverage.csv"), table)
        io.write_csv(io.join(_OUTPUT.value, "coverage_sets.csv"), per_set)
    print(coverage.markdown(table))
    print(f"coverage done in "
          f"{progress.duration(time.perf_counter() - started)}: "
          + (f"wrote coverage.csv and coverage_sets.csv in {_OUTPUT.value}"
             if _OUTPUT.value else "no file written (--output=DIR writes "
             "the tables as CSV)"))
    return 0


if __name__ == "__main__":
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
