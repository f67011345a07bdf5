"""Progress lines for a long study: `[k/N]`, the time left, a header.

The time left is the measured seconds per unit of work (steps times seeds,
or whatever the caller counts) times the units still to run. The first
unit run here also traces the loop (a run's first epoch can take ten times
the others'): once a second unit is timed it is left out of the rate.
Until then its estimate is printed as what it is, an upper bound
(`at most ~4 min 32 s left`), or, where tracing dominates the first unit
(a training run's first epoch), not at all.
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
        bound_first: print the first timed unit's estimate as an upper
            bound; False prints none until a second unit is timed (a
            training run's first epoch traces for several times the
            others' length: its bound would say minutes for seconds).
    """

    def __init__(self, costs, done=0, print_fn=print,
                 clock=time.perf_counter, bound_first=True):
        self.bound_first = bound_first
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
        """The measured rate, or None before any unit was timed; the first
        unit timed here (it traced the loop) is left out once another is."""
        runs = self._measured[1:] or self._measured
        cost = sum(c for c, _ in runs)
        return sum(s for _, s in runs) / cost if cost else None

    @property
    def upper_bound(self):
        """Whether the rate is the first unit's alone, which traced: too
        slow, so that `left()` overestimates (printed as `at most`)."""
        return len(self._measured) == 1

    def left(self):
        """Estimated seconds still to run, or None."""
        rate = self.seconds_per_cost()
        return None if rate is None else rate * self.remaining

    def step(self, cost, seconds, text, work=None):
        """Records one finished unit and prints its line.

        Args:
            cost: the unit's planned cost (what `remaining` loses).
            seconds: how long it took here.
            text: the line after `[k/N]`.
            work: the part of `cost` run in those seconds, where less (a
                unit resumed part way; 0: none ran, e.g. only evaluated,
                and the unit is not timed); default `cost`.
        """
        self.done = min(self.done + 1, self.total)
        self.remaining = max(self.remaining - cost, 0)
        work = cost if work is None else work
        if work > 0:
            self._measured.append((work, seconds))
        left = self.left()
        if left is None or self.done >= self.total or (
                self.upper_bound and not self.bound_first):
            estimate = ""
        elif self.upper_bound:
            estimate = f"  at most ~{duration(left)} left"
        else:
            estimate = f"  ~{duration(left)} left"
        self.print_fn(f"[{self.done}/{self.total}] {text}{estimate}")
