"""Building a release: distillation, pruning, export per engine, quantization, measurement.

Distributing it (manifests, signing, store, rollout) is :mod:`fedge.release`; running and
measuring an artifact, on the build machine as on a device, is :mod:`fedge.inference`.

``build_release(checkpoint=..., out_dir=...)`` turns a global-model checkpoint into a release
directory holding ``model.onnx`` (the int8 student), ``model_fp32.onnx``, ``teacher.onnx``,
``report.json``, ``report.md`` and ``report.png``. ``build_profile_release(...)`` builds one
artifact per device profile (see :mod:`fedge.builder.tiers`).

Its errors are :mod:`fedge.errors` (:class:`~fedge.errors.ReleaseError` and subclasses).
Names are imported on first use (they are listed once, in ``__init__.pyi``): a process that
only reads a build's artifacts (:mod:`fedge.builder.artifact`) never imports torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
