"""Curation policies, one file each, registered by their `type` (see `base`).

Importing the package imports every module in it, so every filter file's spec
and policy are registered: a new filter is a new file here and nothing else.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
