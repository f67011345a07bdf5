"""The flagship study: is the best eta0 independent of the batch size B?

keras-tuner searches eta0 at each B (`driver`, `tuning`, `plan`,
`search_state`); `runners` and `tasks` train the trials as populations;
`records` and `scaling_report` turn the trials into the report, with the
intervals of `optimum` (one folder up) and the critical batch size of
`critical_batch`; `coverage` measures the intervals' coverage on the known
answer and `controls` holds the positive and negative controls.
"""
