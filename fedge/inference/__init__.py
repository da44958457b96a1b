"""Inference on a device, the same on the build machine: run, measure and budget an artifact.

- :mod:`~fedge.inference.runners`: one runner per engine (ONNX Runtime, OpenVINO, LiteRT).
- :mod:`~fedge.inference.measure`: batch-1 latency and peak memory of an artifact, measured in
  a fresh process.
- :mod:`~fedge.inference.profiles`: device profiles (tier, engines, budget, the data a device
  holds); the built-in ones ship as ``fedge/inference/device_profiles/*.toml``.

The device (the slim install: no torch, no onnx) imports this package, so it imports numpy and
the standard library only, and each engine when an artifact of it is loaded. Submodules are
imported explicitly.
"""
