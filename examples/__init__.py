"""Examples of the library in a user's own code (run from the repository
root: `python -m pipelines.quickstart` is the command line of
`examples.quickstart`)."""
