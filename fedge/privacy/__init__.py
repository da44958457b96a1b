"""Differential privacy for fedge: central client-level DP, local DP-SGD, accounting, ledgers.

- :mod:`~fedge.privacy.config`: :class:`PrivacyConfig`, the privacy options of a run.
- :mod:`~fedge.privacy.central`: :class:`CentralDP`, a wrapper around any Flower strategy
  (Poisson sampling, clipping, one Gaussian noise draw on the sum, fixed denominator).
- :mod:`~fedge.privacy.adaptive`: quantile-based adaptive clipping (Andrew et al., 2021).
- :mod:`~fedge.privacy.sampling`: Poisson sampling and the seeded or OS-seeded generators.
- :mod:`~fedge.privacy.accountant`: subsampled-Gaussian ε from Opacus' RDP or PRV accountant.
- :mod:`~fedge.privacy.local` and :mod:`~fedge.privacy.device`: Opacus DP-SGD on a device,
  within the budget of its :mod:`~fedge.privacy.ledger`.
- :mod:`~fedge.privacy.report`: the privacy table of a finished run and the ε-accuracy plot.

Submodules are imported explicitly, so reading a run's privacy options loads neither Flower
nor Opacus.
"""
