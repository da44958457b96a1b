"""Differential privacy for fedge: central client-level DP, local DP-SGD, accounting, ledgers.

- :mod:`~fedge.privacy.central`: :class:`CentralDP`, a wrapper around any Flower strategy
  (Poisson sampling, clipping, one Gaussian noise draw on the sum, fixed denominator).
- :mod:`~fedge.privacy.adaptive`: quantile-based adaptive clipping (Andrew et al., 2021).
- :mod:`~fedge.privacy.sampling`: Poisson sampling and the seeded or OS-seeded generators.
- :mod:`~fedge.privacy.accountant`: subsampled-Gaussian ε from Opacus' RDP or PRV accountant.
- :mod:`~fedge.privacy.local` and :mod:`~fedge.privacy.device`: Opacus DP-SGD on a device,
  within the budget of its :mod:`~fedge.privacy.ledger`.
- :mod:`~fedge.privacy.report`: the privacy table of a finished run and the ε-accuracy plot.
"""

from fedge.privacy.accountant import Accountant, noise_for_epsilon
from fedge.privacy.central import CentralDP, build_private_strategy
from fedge.privacy.ledger import DeviceLedger

__all__ = ["Accountant", "CentralDP", "DeviceLedger", "build_private_strategy", "noise_for_epsilon"]
