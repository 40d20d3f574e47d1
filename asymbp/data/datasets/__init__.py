"""The dataset definitions: one module per dataset (or per family sharing one format: cifar,
caltech), each defining its loaders with @register_dataset("name"). Importing this package
imports every module in it, so that a new file here is registered without another edit."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
