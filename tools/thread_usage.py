r"""Where a training repeat's time goes, thread by thread (Linux).

    python tools/thread_usage.py                       # ResNet-20, B = 128
    python tools/thread_usage.py --spinners            # idle cores kept busy

Trains the trainer's compiled loop and Keras `fit` on the same model,
alternated in this process after a warm-up (as `tools/benchmark.py
--suites=trainer`), and prints one line per repeat: images/s, the cores the
process kept busy (its CPU time over the wall time), the machine's busy,
idle and steal shares from `/proc/stat` over the same wall time (busy is
user and system time; the spinners' niced time counts in neither), and each
thread of the process that used more than 5% of a core (its name and
share, from `/proc/self/task`); and in how many of the 50-ms samples
taken meanwhile the threads that ran were all on one CPU (a scheduler
packing them onto one core would show there). With `--spinners`, two
`nice -n 19` busy loops keep the machine's cores from idling while it
runs: a repeat that still runs slowly was not waiting for an idle core to
wake.

What it is for: on 2 cores TensorFlow now and then runs a whole repeat on
about one core at the same CPU per image (docs/PERFORMANCE.md, section 1);
these lines show where that time went.
"""

import os
import subprocess
import sys
import threading
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

_MODEL = flags.DEFINE_string("model", "resnet20", "Model (as the trainer "
                             "suite's `base_config`).")
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_SIZE = flags.DEFINE_integer("size", 32, "Image size.")
_STEPS = flags.DEFINE_integer("steps", 30, "Steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 6, "Repeats of each side.")
_SPINNERS = flags.DEFINE_bool("spinners", False, "Run two `nice -n 19` "
                              "busy loops beside the measurement.")


def threads():
    """`{thread id: (name, CPU ticks, the CPU it last ran on)}` of this
    process's threads."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as file:
                name = file.read().strip()
        except OSError:  # The thread ended meanwhile.
            continue
        # proc(5): utime + stime, and `processor`.
        found[tid] = (name, int(fields[11]) + int(fields[12]),
                      int(fields[36]))
    return found


class CpuSampler:
    """Every `every` seconds, the CPUs on which the threads that used CPU
    since the last sample ran: `samples()` counts the samples whose
    threads were all on one CPU, and those on several."""

    def __init__(self, every=0.05):
        self.every, self.counts = every, {"one": 0, "several": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = str(threading.get_native_id())
        before = threads()
        while not self._stop.wait(self.every):
            now = threads()
            cpus = {now[t][2] for t in now
                    if t in before and t != me and now[t][1] > before[t][1]}
            if cpus:
                self.counts["one" if len(cpus) == 1 else "several"] += 1
            before = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def machine():
    """The machine's CPU ticks: user, nice, system, idle, ..., steal."""
    with open("/proc/stat") as file:
        return [int(value) for value in file.readline().split()[1:]]


def repeat(bench, steps):
    """One timed repeat of `bench`: a dict of what it used."""
    tick = os.sysconf("SC_CLK_TCK")
    before, stat = threads(), machine()
    with CpuSampler() as sampler:
        wall, cpu = time.perf_counter(), time.process_time()
        images_per_sec = bench.measure(steps)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after, moved = threads(), [b - a for a, b in zip(stat, machine(),
                                                     strict=True)]
    shares = sorted(((after[t][0], (after[t][1] - before[t][1]) / tick
                      / wall)
                     for t in after if t in before), key=lambda s: -s[1])
    return {"images_per_sec": images_per_sec, "cores_busy": cpu / wall,
            "machine_busy": (moved[0] + moved[2]) / tick / wall,
            "machine_idle": moved[3] / tick / wall,
            "steal": moved[7] / tick / wall if len(moved) > 7 else 0.0,
            "threads": [(n, s) for n, s in shares if s > 0.05],
            "on_one_cpu": sampler.counts["one"],
            "on_several_cpus": sampler.counts["several"]}


def line(index, name, used):
    """One printed line of a repeat."""
    threads_text = " ".join(f"{n}:{s:.2f}" for n, s in used["threads"])
    return (f"{index} {name:9s} {used['images_per_sec']:7.0f} img/s, "
            f"{used['cores_busy']:.2f} cores busy | machine busy "
            f"{used['machine_busy']:.2f}, idle {used['machine_idle']:.2f}, "
            f"steal {used['steal']:.2f} | on one CPU "
            f"{used['on_one_cpu']} of "
            f"{used['on_one_cpu'] + used['on_several_cpus']} samples | "
            f"{threads_text}")


def main(argv):
    del argv
    for flag in (_BATCH, _SIZE, _STEPS, _REPEATS):
        if flag.value < 1:
            print(f"error: `--{flag.name}` must be an integer >= 1. "
                  f"Received: {flag.value}", file=sys.stderr)
            return 2
    from benchmark_parts import KerasFit, TrainerLoop, base_config

    config = base_config(_MODEL.value, _BATCH.value, _SIZE.value,
                         _STEPS.value)
    sides = {"trainer": TrainerLoop(config),
             "fit": KerasFit(config, jit_compile=False)}
    for bench in sides.values():
        bench.measure(2)  # Traces and warms the caches.
    # Each loop ends when this process does, however it ends (a kill
    # skips the `finally` below): it spins while its parent is this
    # process (named here: killed before the loop starts, it is already
    # not), looking every million turns (a system call each turn would
    # count as busy system time).
    spin = (f"import os\nwhile os.getppid() == {os.getpid()}:\n"
            "    for _ in range(1000000): pass")
    spinners = [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c",
                                  spin])
                for _ in range(2 if _SPINNERS.value else 0)]
    try:
        for index in range(_REPEATS.value):
            for name, bench in sides.items():
                print(line(index, name, repeat(bench, _STEPS.value)),
                      flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    return 0


if __name__ == "__main__":
    from pipelines import _startup

    _startup.start_entry_point()
    app.run(main)
