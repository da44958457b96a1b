"""Datasets: embedded and on-disk loaders, a registry, data files read without code (tables,
sensor series, image folders, npz) with their fitted preprocessing, and client partitioners.

Names are imported on first use (they are listed once, in ``__init__.pyi``): a serving device
that only normalises its inputs (:mod:`fedge.data.preprocessing`) loads neither the registry nor
the file readers.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
