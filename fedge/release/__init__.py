"""Signed model releases on the coordinator: signing, the release store, staged rollout, publish.

- :mod:`~fedge.release.signing`: the coordinator's Ed25519 release key and manifest signatures.
- :mod:`~fedge.release.store`: releases, rollout state and install outcomes
  (:mod:`~fedge.release.artifacts`, :mod:`~fedge.release.tables`, :mod:`~fedge.release.telemetry`).
- :mod:`~fedge.release.rollout`: which release a device gets (stable percentage buckets).
- :mod:`~fedge.release.publish`: a release build (``model.onnx`` + ``report.json``) as a release.

This is the coordinator's half; manifests and their verification, which devices share, are
:mod:`fedge.protocol.manifest`; building what is released is :mod:`fedge.builder`. Submodules are
imported explicitly.
"""
