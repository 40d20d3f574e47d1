"""mylab: a dataset, a model and a feedback rule of our own, registered with asymbp when this
package is imported (`plugins: [mylab]` in a config, or `plugins=[mylab]` on the command line)."""

from mylab import datasets, models, rules  # noqa: F401  (imported for their registrations)
