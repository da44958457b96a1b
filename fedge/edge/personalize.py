"""Personalisation on the device: a personal last layer over the delivered model's features.

A release that exposes its penultimate activations as a second ONNX output named
``features`` can be personalised on any device, torch or not: the device computes the
features of its own labelled data (``--data``) with the delivered model, fits a new last
layer on them and serves ``features @ W + b`` instead of the release's logits.

- With torch and Opacus (``fedge[train]``), the layer is fitted by DP-SGD within the device's
  local DP ledger (:func:`fedge.privacy.device.train_private`): the ledger refuses a fit that
  would pass the device's budget (``no budget left``).
- A slim device (numpy only) fits the same layer by softmax regression with numpy. It has no
  accountant, so this fit is not DP: the personal model never leaves the device, and what
  does leave it (the outcome) is noised (:func:`noisy_outcome`).

The guard of :mod:`fedge.app.personalize` decides: the device serves the personal layer only
if it beats the delivered model on a held-out validation split of its own data; otherwise it
keeps the global model and records why (too little data, no budget left, no gain). The
personal model goes through the same A/B slot, health check and rollback as a release: the
release's own verified bytes and manifest are copied into the free slot with the layer beside
them (``head.npz``), tried, health-checked and committed, or reverted to the global model.
A new release clears the head (it is another slot) and is personalised again on top.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.app.personalize import (
    MIN_TRAIN,
    MIN_VALIDATION,
    NO_BUDGET,
    NO_GAIN,
    SPLIT,
    TOO_LITTLE_DATA,
    guard,
    local_split,
)
from fedge.edge.head import FEATURES_OUTPUT
from fedge.edge.health import HealthConfig, check_health, load_labelled
from fedge.edge.slots import HEAD_FILE, Slots
from fedge.errors import PrivacyBudgetExceededError, VerificationError
from fedge.files import atomic_write
from fedge.inference.runners import Runner, load_runner
from fedge.log import logger

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fedge.inference.profiles import Budget

__all__ = [
    "OUTCOME_FILE",
    "REASONS",
    "REPORT_EPSILON",
    "REPORT_FILE",
    "ROLLED_BACK",
    "OutcomeReport",
    "PersonalOutcome",
    "PersonalizeSettings",
    "load_outcome",
    "load_report",
    "noisy_outcome",
    "personalize_serving",
    "report_outcome",
]

#: The device's last personalisation outcome, in its state directory.
OUTCOME_FILE = "personalization.json"
#: What the device reports of that outcome (noised once, sent with every heartbeat): averaging
#: its heartbeats gives the same noisy figure, not the true one.
REPORT_FILE = "personalization-report.json"
#: The epsilon of one report (see :func:`noisy_outcome`).
REPORT_EPSILON = 1.0
NO_FEATURES = "the release exposes no features"
NO_DATA = "no local data"
ROLLED_BACK = "rolled back"


@dataclass(frozen=True)
class PersonalizeSettings:
    """How a device personalises: its data, its budget for it, the fit."""

    data: Path | None = None
    # The local DP budget of this device's fits, and how many fits it is planned for (each
    # release is one): the noise of each fit is what keeps ``fits`` of them within epsilon.
    epsilon: float = 8.0
    delta: float = 1e-5
    clip: float = 1.0
    fits: int = 4
    epochs: int = 30
    lr: float = 0.5
    seed: int = 0
    # "auto": DP-SGD where torch and Opacus are installed, else numpy; "numpy" forces the slim fit.
    method: str = "auto"


@dataclass(frozen=True)
class PersonalOutcome:
    """What a personalisation did: serves the personal layer or not, and why."""

    version: int
    served: bool
    reason: str
    gain: float = 0.0  # validation accuracy, personal minus global
    global_accuracy: float = 0.0
    personal_accuracy: float = 0.0
    samples: int = 0
    method: str = ""
    epsilon: float | None = None  # the device's ledger after the fit (DP-SGD only)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class OutcomeReport:
    """A personalisation outcome as it leaves the device: noised (:func:`noisy_outcome`)."""

    version: int
    gain: float
    reason: str
    epsilon: float


def load_report(state_dir: Path) -> OutcomeReport | None:
    """The device's noised report of its last outcome (``None`` before its first)."""
    try:
        return OutcomeReport(**json.loads((Path(state_dir) / REPORT_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def report_outcome(state_dir: Path, outcome: PersonalOutcome) -> OutcomeReport:
    """Noise ``outcome`` once and keep it in ``state_dir`` as what the heartbeats report."""
    gain, reason = noisy_outcome(outcome, epsilon=REPORT_EPSILON)
    report = OutcomeReport(outcome.version, gain, reason, REPORT_EPSILON)
    atomic_write(Path(state_dir) / REPORT_FILE, json.dumps(asdict(report)).encode())
    return report


def load_outcome(state_dir: Path) -> PersonalOutcome | None:
    """The device's last outcome (``None`` before its first personalisation)."""
    try:
        return PersonalOutcome(**json.loads((Path(state_dir) / OUTCOME_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


#: The reasons a device reports, a fixed set (randomised response picks among them).
REASONS = ("gain", NO_GAIN, TOO_LITTLE_DATA, NO_BUDGET, ROLLED_BACK, NO_FEATURES, NO_DATA)


def noisy_outcome(
    outcome: PersonalOutcome, *, epsilon: float = 1.0, rng: np.random.Generator | None = None
) -> tuple[float, str]:
    """What leaves the device: ``(gain, reason)``, ``epsilon``-DP as a pair.

    Half the budget each: the gain (in [-1, 1]; one record may change the whole fit, so its
    sensitivity is 2) gets Laplace noise of scale ``2 / (epsilon / 2)``; the reason, one of
    :data:`REASONS`, goes through randomised response. The fleet's mean gain and its counts of
    reasons stay estimable; no device's own figure does.
    """
    rng = rng or np.random.default_rng()
    half = epsilon / 2
    gain = float(np.clip(outcome.gain + rng.laplace(0.0, 2.0 / half), -1.0, 1.0))
    reason = outcome.reason.split(":")[0]
    reason = reason if reason in REASONS else NO_GAIN
    keep = np.exp(half) / (np.exp(half) + len(REASONS) - 1)
    if rng.random() >= keep:
        reason = str(rng.choice([r for r in REASONS if r != reason]))
    return gain, reason


def personalize_serving(
    state_dir: Path,
    settings: PersonalizeSettings,
    *,
    public_key: Ed25519PublicKey,
    health: HealthConfig | None = None,
    budget: Budget | None = None,
) -> PersonalOutcome:
    """Personalise the release this device serves; install the result if the guard passes.

    Records the outcome in ``state_dir`` (:data:`OUTCOME_FILE`) and its noised report
    (:data:`REPORT_FILE`, what the device's heartbeats carry) and returns the outcome.
    """
    slots = Slots(state_dir)
    serving = slots.state().serving
    if serving is None:
        raise VerificationError("malformed", "this device serves no release to personalise")
    manifest = slots.verify_slot(serving, public_key=public_key)
    outcome = _fit_and_install(slots, serving, manifest, settings, health, budget, state_dir)
    atomic_write(Path(state_dir) / OUTCOME_FILE, json.dumps(outcome.to_dict()).encode())
    report_outcome(state_dir, outcome)
    log = logger.info if outcome.served else logger.warning
    log("personalisation of release %d: %s", outcome.version, outcome.reason)
    return outcome


def _fit_and_install(
    slots: Slots,
    serving: str,
    manifest: Any,
    settings: PersonalizeSettings,
    health: HealthConfig | None,
    budget: Budget | None,
    state_dir: Path,
) -> PersonalOutcome:
    version = manifest.version
    if settings.data is None or not Path(settings.data).exists():
        return PersonalOutcome(version, False, NO_DATA)
    model = slots.model_path(serving)
    base = load_runner("onnxruntime", model)
    outputs = [o.name for o in base.session.get_outputs()]  # type: ignore[attr-defined]
    if FEATURES_OUTPUT not in outputs:
        return PersonalOutcome(version, False, NO_FEATURES)
    x, y = load_labelled(Path(settings.data))
    train_idx, val_idx, test_idx = local_split(len(y), settings.seed)
    train_idx = np.sort(np.concatenate([train_idx, test_idx]))  # a device needs no test split
    if len(train_idx) < MIN_TRAIN or len(val_idx) < MIN_VALIDATION:
        return PersonalOutcome(version, False, TOO_LITTLE_DATA, samples=len(y))
    logits, features = _logits_and_features(base, x)
    method = _method(settings)
    try:
        weights, bias, epsilon = _fit(
            features[train_idx], y[train_idx], logits.shape[1], method, settings, state_dir
        )
    except PrivacyBudgetExceededError:
        return PersonalOutcome(version, False, NO_BUDGET, samples=len(y), method=method)
    global_val = float((logits[val_idx].argmax(1) == y[val_idx]).mean())
    personal_val = float(((features[val_idx] @ weights + bias).argmax(1) == y[val_idx]).mean())
    decision = guard(global_val, personal_val, len(val_idx))
    measured = PersonalOutcome(
        version,
        False,
        decision.reason,
        gain=decision.gain,
        global_accuracy=global_val,
        personal_accuracy=personal_val,
        samples=len(y),
        method=method,
        epsilon=epsilon,
    )
    if not decision.serve_personal:
        return measured
    problem = _install(slots, serving, manifest, weights, bias, health, budget)
    if problem:
        return replace(measured, reason=f"{ROLLED_BACK}: {problem}")
    return replace(measured, served=True, reason="gain")


def _logits_and_features(runner: Runner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session: Any = runner.session  # type: ignore[attr-defined]
    name = session.get_inputs()[0].name
    first = session.get_outputs()[0].name
    logits, features = [], []
    for start in range(0, len(x), 256):
        batch = np.ascontiguousarray(x[start : start + 256], dtype=np.float32)
        out, feat = session.run([first, FEATURES_OUTPUT], {name: batch})
        logits.append(np.asarray(out, dtype=np.float32))
        features.append(np.asarray(feat, dtype=np.float32).reshape(len(batch), -1))
    return np.concatenate(logits), np.concatenate(features)


def _method(settings: PersonalizeSettings) -> str:
    if settings.method == "numpy":
        return "numpy"
    has_dp = all(importlib.util.find_spec(p) is not None for p in ("torch", "opacus"))
    return "dp-sgd" if has_dp else "numpy"


def _fit(
    features: np.ndarray,
    labels: np.ndarray,
    release_classes: int,
    method: str,
    settings: PersonalizeSettings,
    state: Path,
) -> tuple[np.ndarray, np.ndarray, float | None]:
    # As many outputs as the release promises, whichever classes this device's data holds.
    classes = max(release_classes, int(labels.max()) + 1 if len(labels) else 1)
    if method == "numpy":
        weights, bias = softmax_regression(features, labels, classes, settings)
        return weights, bias, None
    return _fit_private(features, labels, classes, settings, state)


def softmax_regression(
    features: np.ndarray, labels: np.ndarray, classes: int, settings: PersonalizeSettings
) -> tuple[np.ndarray, np.ndarray]:
    """A last layer fitted with numpy: full-batch gradient descent on the cross-entropy.

    Each feature is standardised first: a shifted sensor (a dimmed camera) moves a model's
    features into a narrow band around their biases, where one learning rate fits no scale.
    The standardisation is folded back into ``W`` and ``b``, so the layer reads raw features.
    """
    mean = features.mean(axis=0)
    spread = features.std(axis=0)
    # A feature that barely varies here is not amplified past the typical one's scale.
    spread = np.maximum(spread, 1e-3 * (float(spread.mean()) or 1.0))
    x = (features - mean) / spread
    onehot = np.eye(classes, dtype=np.float32)[labels]
    weights = np.zeros((x.shape[1], classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    for _ in range(settings.epochs * 10):
        z = x @ weights + bias
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        weights -= settings.lr * (x.T @ grad + 1e-3 * weights)
        bias -= settings.lr * grad.sum(axis=0)
    folded = weights / spread[:, None]
    return folded.astype(np.float32), (bias - mean @ folded).astype(np.float32)


def _fit_private(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    settings: PersonalizeSettings,
    state: Path,
) -> tuple[np.ndarray, np.ndarray, float]:
    import torch

    from fedge.privacy.config import PrivacyConfig
    from fedge.privacy.device import train_private

    scale = float(np.abs(features).mean()) or 1.0
    layer = torch.nn.Linear(features.shape[1], classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    privacy = PrivacyConfig(
        local_dp_epsilon=settings.epsilon,
        local_dp_clip=settings.clip,
        dp_delta=settings.delta,
        dp_seed=settings.seed,
    )
    result = train_private(
        layer,
        torch.from_numpy(np.ascontiguousarray(features / scale, dtype=np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
        config=privacy,
        rounds=settings.fits,
        state_dir=state,
        server_round=0,
        epochs=settings.epochs,
        batch_size=max(8, len(labels) // 4),
        lr=settings.lr,
        momentum=0.9,
        seed=settings.seed,
    )
    weights = result.state_dict["weight"].numpy().T / scale
    bias = result.state_dict["bias"].numpy()
    return weights.astype(np.float32), bias.astype(np.float32), result.device_epsilon


def _install(
    slots: Slots,
    serving: str,
    manifest: Any,
    weights: np.ndarray,
    bias: np.ndarray,
    health: HealthConfig | None,
    budget: Budget | None,
) -> str:
    """Copy the release into the free slot with the head beside it, try it, health-check it,
    commit it or revert to the global model; the reason it was reverted, or ""."""
    signed = slots.signed_manifest(serving)
    assert signed is not None  # verified by the caller
    target = slots.writable_slot()
    copy = slots.state_dir / "downloads" / "personal.part"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(slots.model_path(serving), copy)
    slots.write_slot(target, model=copy, signed=signed)
    head = slots.slot_dir(target) / HEAD_FILE
    with open(head.with_suffix(".tmp"), "wb") as handle:
        np.savez(handle, W=weights, b=bias)
    head.with_suffix(".tmp").replace(head)
    slots.begin_trial(target, version=manifest.version)
    config = health or HealthConfig()
    result = check_health(slots.model_path(target), manifest, config=config, budget=budget)
    if not result.ok:
        slots.revert()
        return f"health check failed: {result.reason}"
    slots.commit()
    return ""


#: The validation share of a device's data (the guard's split), for the README and reports.
VALIDATION_SHARE = SPLIT[1]
