"""The studies, one folder each (`eta0`, `equilibrium`, `cooling`), and what
they share: the population engine (`population`, `copy_models`), the known
answer (`linear_regression`, `equipartition`), the statistics of an optimum
(`optimum`) and the state of an experiment's directory
(`experiment_state`)."""
