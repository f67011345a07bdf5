"""Progress lines for a long study: `[k/N]`, the time left, a header.

The time left is the measured seconds per unit of work (steps times seeds,
or whatever the caller counts) times the units still to run; the first
unit, which also traces the loop, is left out of the rate once others are
done.
"""

import time


def duration(seconds):
    """`'1 min 05 s'`, `'42 s'`: a time for a person."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts finished units of work and prints `[k/N]` lines.

    Args:
        costs: the cost of every planned unit (e.g. its steps x seeds).
        done: how many of them an earlier run already finished.
        print_fn: called with each line.
        clock: returns seconds (a test passes a fake one).
    """

    def __init__(self, costs, done=0, print_fn=print,
                 clock=time.perf_counter):
        self.costs = list(costs)
        self.done = min(int(done), len(self.costs))
        self.print_fn, self.clock = print_fn, clock
        self.remaining = sum(self.costs[self.done:])
        self._measured = []  # (cost, seconds) of units run here.
        self.started = clock()

    @property
    def total(self):
        return len(self.costs)

    def seconds_per_cost(self):
        """The measured rate, or None before any unit ran."""
        runs = self._measured[1:] or self._measured
        cost = sum(c for c, _ in runs)
        return sum(s for _, s in runs) / cost if cost else None

    def left(self):
        """Estimated seconds still to run, or None."""
        rate = self.seconds_per_cost()
        return None if rate is None else rate * self.remaining

    def step(self, cost, seconds, text):
        """Records one finished unit and prints its line."""
        self.done = min(self.done + 1, self.total)
        self.remaining = max(self.remaining - cost, 0)
        self._measured.append((cost, seconds))
        left = self.left()
        self.print_fn(f"[{self.done}/{self.total}] {text}"
                      + (f"  ~{duration(left)} left" if left is not None
                         and self.done < self.total else ""))
