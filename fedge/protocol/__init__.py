"""The protocol layer both sides of the wire share, importing neither side.

- :mod:`~fedge.protocol.transport`: servers and channels (limits, keepalive, TLS, one process
  per port), lenient request decoding.
- :mod:`~fedge.protocol.interceptor`: the one server interceptor (authentication, error →
  status, refusals).
- :mod:`~fedge.protocol.wire`, :mod:`~fedge.protocol.buffers`, :mod:`~fedge.protocol.payload`:
  chunk framing and payload assembly; :mod:`~fedge.protocol.messages`: Flower messages as
  payloads (needs Flower: training devices and the coordinator only).
- :mod:`~fedge.protocol.serde`: protobuf ⇄ domain types, enum maps;
  :mod:`~fedge.protocol.metadata`: metadata keys and the retry hint.
- :mod:`~fedge.protocol.tokens`, :mod:`~fedge.protocol.pki`: enrolment tokens, device keys,
  certificate fingerprints and peer identities.
- :mod:`~fedge.protocol.manifest`: release manifests and their verification.

Submodules are imported explicitly (this package imports none of them), so a device that only
serves predictions loads what it uses and nothing of Flower or torch.
"""
