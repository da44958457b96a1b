"""DeviceDelivery: the key pinned at enrolment, update loop, local inference, telemetry."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from fedge.coordinator.hub import serve_hub
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.identity import PINNED_KEY_FILE, pin_release_key
from fedge.errors import VerificationError
from fedge.protocol.manifest import public_key_pem
from fedge.release.signing import generate_release_key
from fedge.release.store import ReleaseStore
from fedge.release.testing import publish_linear
from fedge.v1 import inference_pb2, inference_pb2_grpc


def test_device_delivery_end_to_end_on_loopback(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    pin_release_key(tmp_path / "dev", public_key_pem(key.public_key()))  # as enrolment does
    delivery = DeviceDelivery(
        channel=channel,
        state_dir=tmp_path / "dev",
        device_id="dev-1",
        settings=DeliverySettings(interval=3600),  # ticks are driven by the test
    )
    try:
        delivery.start()
        assert delivery.inference_port is not None
        v1 = publish_linear(store, tmp_path, seed=1)
        report = delivery.tick()
        # the update loop checks once at start-up too, so either tick may be the one installing
        assert report is None or report.state == "installed"
        assert delivery.updater is not None
        assert delivery.updater.active_version() == v1.manifest.version
        pinned = (tmp_path / "dev" / PINNED_KEY_FILE).read_bytes()
        assert pinned == public_key_pem(key.public_key())
        with grpc.insecure_channel(f"127.0.0.1:{delivery.inference_port}") as local:
            stub = inference_pb2_grpc.InferenceServiceStub(local)
            x = np.zeros((1, 16), dtype="<f4")
            request = inference_pb2.PredictRequest(
                input=inference_pb2.Tensor(shape=[1, 16], data=x.tobytes())
            )
            assert stub.Predict(request).model_version == v1.manifest.version
            v2 = publish_linear(store, tmp_path, seed=2)
            delivery.tick()
            assert stub.Predict(request).model_version == v2.manifest.version
        delivery.tick()
        (telemetry,) = store.telemetry.latest(version=v2.manifest.version)
        assert telemetry.device_id == "dev-1" and telemetry.requests == 2
        assert store.status(v2.manifest.version)["installed"] == 1
    finally:
        delivery.stop()
        channel.close()
        server.stop(grace=None)
        store.close()


def test_a_different_key_from_the_hub_is_refused_after_pinning(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    store = ReleaseStore(root=tmp_path / "store", key=key)
    server, port = serve_hub(store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    other = generate_release_key(path=tmp_path / "other.pem")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / PINNED_KEY_FILE).write_bytes(public_key_pem(other.public_key()))
    delivery = DeviceDelivery(
        channel=channel,
        state_dir=tmp_path / "dev",
        device_id="dev-1",
        settings=DeliverySettings(interval=3600, inference_address=None),
    )
    try:
        publish_linear(store, tmp_path, seed=1)
        report = delivery.tick()  # signed by a key the device did not pin
        assert report is not None and report.state == "refused"
        assert report.reason.startswith("signature")
        assert delivery.engine.version == 0
    finally:
        channel.close()
        server.stop(grace=None)
        store.close()
    with pytest.raises(VerificationError):
        pin_release_key(tmp_path / "dev", public_key_pem(key.public_key()))
