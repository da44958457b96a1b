"""Tiny real ONNX models and labelled data for release tests, benchmarks and demos.

A linear classifier ``logits = x @ W + b`` built with ``onnx.helper``: small, deterministic from
a seed, and with known labels, so a health check's accuracy floor can pass or fail on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fedge.protocol.manifest import SignedManifest
from fedge.release.onnx_info import describe_onnx
from fedge.release.store import ReleaseStore

__all__ = [
    "linear_weights",
    "make_feature_model",
    "make_labelled_data",
    "make_linear_model",
    "publish_linear",
]


def linear_weights(*, features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic weights ``(W, b)`` for a seed."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((features, classes)).astype(np.float32)
    bias = rng.standard_normal(classes).astype(np.float32) * 0.1
    return weights, bias


def make_linear_model(
    path: Path,
    *,
    features: int = 16,
    classes: int = 4,
    seed: int = 0,
    poison: str | None = None,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a linear ONNX classifier (input ``x`` [N, features] -> ``logits`` [N, classes]).

    ``weights`` (``W`` [features, classes], ``b`` [classes]) replace the seeded ones, e.g. a
    classifier fitted to real data. ``poison="nan"`` makes every output NaN (a model that must
    fail its health check).
    """
    pair = weights or linear_weights(features=features, classes=classes, seed=seed)
    matrix = np.asarray(pair[0], dtype=np.float32)
    bias = np.asarray(pair[1], dtype=np.float32)
    features, classes = matrix.shape
    if poison == "nan":
        bias = np.full_like(bias, np.nan)
    elif poison is not None:
        raise ValueError(f"unknown poison {poison!r}; valid: 'nan'")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        "fedge-linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(matrix, "W"), numpy_helper.from_array(bias, "b")],
    )
    return _save_graph(graph, path)


def make_feature_model(
    path: Path,
    *,
    inputs: int = 16,
    hidden: int = 32,
    classes: int = 4,
    seed: int = 0,
    poison: str | None = None,
) -> Path:
    """A two-layer ONNX classifier that exposes its penultimate activations, as a release
    built for personalisation does: ``x`` -> ``features = relu(x @ W1 + b1)`` -> ``logits``.

    ``poison="features"`` makes ``features`` NaN for every input row holding a negative value
    (``logits`` stay finite): a release whose own outputs pass a health check, while a
    personal layer over its features fails it on inputs the device's data never holds.
    """
    if poison not in (None, "features"):
        raise ValueError(f"unknown poison {poison!r}; valid: 'features'")
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((inputs, hidden)).astype(np.float32)
    b1 = np.full(hidden, 1.0, dtype=np.float32)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    b2 = rng.standard_normal(classes).astype(np.float32) * 3.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["xw"]),
            helper.make_node("Add", ["xw", "b1"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["hidden"]),
            *_feature_nodes(poison),
            helper.make_node("MatMul", ["hidden", "W2"], ["hw"]),
            helper.make_node("Add", ["hw", "b2"], ["logits"]),
        ],
        "fedge-features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", hidden]),
        ],
        [
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "W2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    return _save_graph(graph, path)


def _save_graph(graph: onnx.GraphProto, path: Path) -> Path:
    """Check ``graph`` as an opset-17 model and write it to ``path``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _feature_nodes(poison: str | None) -> list[onnx.NodeProto]:
    """``features`` from ``hidden``: the same, or NaN on rows holding a negative input."""
    if poison is None:
        return [helper.make_node("Identity", ["hidden"], ["features"])]
    # sqrt(min of the row) is NaN on a row with a negative value, and x - x keeps NaN only.
    return [
        helper.make_node("ReduceMin", ["x"], ["low"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", ["low"], ["root"]),
        helper.make_node("Sub", ["root", "root"], ["nan_or_zero"]),
        helper.make_node("Add", ["hidden", "nan_or_zero"], ["features"]),
    ]


def make_labelled_data(
    path: Path, *, features: int = 16, classes: int = 4, seed: int = 0, samples: int = 64
) -> Path:
    """Write ``x``/``y`` (``.npz``) labelled by the model of ``seed``: that model scores 100%."""
    weights, bias = linear_weights(features=features, classes=classes, seed=seed)
    x = np.random.default_rng(seed + 1000).standard_normal((samples, features)).astype(np.float32)
    y = np.argmax(x @ weights + bias, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def publish_linear(
    store: ReleaseStore,
    workdir: Path,
    *,
    seed: int,
    percent: int = 100,
    profile: str = "cpu-small",
    poison: str | None = None,
    features: int = 16,
    classes: int = 4,
) -> SignedManifest:
    """Build a linear model in ``workdir`` and publish it to ``store``."""
    model = make_linear_model(
        workdir / f"linear-{seed}-{poison}-{features}.onnx",
        features=features,
        classes=classes,
        seed=seed,
        poison=poison,
    )
    inputs, outputs = describe_onnx(model)
    return store.publish(
        artifact=model,
        name=f"linear-{seed}",
        profile=profile,
        percent=percent,
        inputs=inputs,
        outputs=outputs,
        labels=tuple(f"class-{i}" for i in range(classes)),
    )
