"""mylab: a dataset and a model of our own, registered with asymbp when this package is imported
(`plugins: [mylab]` in a config, or `plugins=[mylab]` on the command line)."""

from mylab import datasets, models  # noqa: F401  (imported for their registrations)
