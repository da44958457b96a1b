"""Simulated sites (``fedge simulate --gateways K``): the same rounds as the flat simulation,
per-site facts in results.json, and the data split per device or per site."""

import json
import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedge.app.client import simulated_partitions
from fedge.app.config import RunConfig
from fedge.app.sites import site_members
from fedge.cli.main import app
from fedge.data import get_dataset, parse_partition, partition_indices
from fedge.simulation import simulate

BASE = RunConfig(
    dataset="digits",
    model="cnn-small",
    clients=4,
    rounds=2,
    local_epochs=1,
    batch_size=16,
    lr=0.1,
    release=False,
)


def test_sites_reach_the_flat_simulations_rounds(tmp_path: Path) -> None:
    config = BASE.replace(fraction_evaluate=1.0)  # federated evaluation goes through sites too
    flat = simulate(config, device_state_root=tmp_path / "flat")
    hier = simulate(
        config.replace(gateways=2), out_dir=tmp_path / "out", device_state_root=tmp_path / "hier"
    )
    for a, b in zip(flat.rounds, hier.rounds, strict=True):
        assert abs(a.accuracy - b.accuracy) <= 1e-3 and a.aggregated == b.aggregated == 4
        assert a.client_accuracy is not None and b.client_accuracy is not None
        assert abs(a.client_accuracy - b.client_accuracy) <= 1e-3
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    sites = written["rounds"][-1]["sites"]
    assert [s["site"] for s in sites] == ["site-1", "site-2"]
    assert all(s["asked"] == s["aggregated"] == 2 and 0 <= s["accuracy"] <= 1 for s in sites)
    assert sum(s["examples"] for s in sites) == sum(len(y) for _, y in _parts(BASE))


def test_site_rounds_train_several_times_between_cloud_rounds(tmp_path: Path) -> None:
    once = simulate(BASE.replace(gateways=2, rounds=1), device_state_root=tmp_path / "a")
    twice = simulate(
        BASE.replace(gateways=2, rounds=1, site_rounds=2), device_state_root=tmp_path / "b"
    )
    assert [s["local_rounds"] for s in twice.rounds[0].extra["sites"]] == [2, 2]
    # the second local round starts from each site's own model: the sites learn more
    assert twice.rounds[0].loss < once.rounds[0].loss


def _parts(config: RunConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in simulated_partitions(config, config.clients)]


def test_a_partition_per_site_deals_each_sites_share_to_its_devices() -> None:
    config = BASE.replace(clients=6, gateways=3, partition="dirichlet:0.3", partition_level="site")
    labels = get_dataset("digits").y_train
    shares = partition_indices(labels, 3, parse_partition("dirichlet:0.3"), seed=config.seed)
    parts = _parts(config)
    for members, share in zip(site_members(6, 3), shares, strict=True):
        got = np.sort(np.concatenate([parts[c][1] for c in members]))
        assert np.array_equal(got, np.sort(labels[share]))  # the site's labels, all of them
        sizes = [len(parts[c][1]) for c in members]
        assert max(sizes) - min(sizes) <= 1  # dealt evenly within the site


def test_simulate_gateways_prints_each_sites_share(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            *("--gateways", "4", "--clients", "40", "--rounds", "1"),
            *("--dataset", "digits", "--model", "mlp", "--no-release"),
            *("--out", str(tmp_path / "out"), "--device-state-root", str(tmp_path / "dev")),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "40 clients behind 4 site gateways" in result.output
    for site in range(1, 5):  # each on one line, however narrow the terminal
        line = (
            rf"^ +site-{site}: 10/10 devices, \d+ examples, "
            r"train loss [\d.]+, site model accuracy [\d.]+$"
        )
        assert re.search(line, result.output, re.MULTILINE), result.output
    refused = CliRunner().invoke(app, ["simulate", "--gateways", "2", "--strategy", "krum"])
    assert refused.exit_code == 2 and "--strategy: 'krum' cannot be computed" in refused.output
