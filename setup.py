"""The one build rule pyproject.toml cannot state: the wheel carries the repository's top-level
conf/ as the package data `asymbp/conf`, where `asymbp.config.CONFIG_DIR` finds it after a
regular install (a source checkout reads conf/ in place). Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

CODE = find_namespace_packages(
    include=["asymbp", "asymbp.*", "hydra_plugins", "hydra_plugins.*"], exclude=["*.__pycache__"]
)
# conf/ and each folder below it, as asymbp.conf, asymbp.conf.dataset, ... (data-only packages)
CONF = ["asymbp.conf", *(f"asymbp.conf.{name}" for name in find_namespace_packages("conf"))]

setup(
    packages=[*CODE, *CONF],
    package_dir={"asymbp.conf": "conf"},
    package_data={"": ["*.yaml", "*.csv", "*.json"]},  # configs, and data shipped in asymbp
)
