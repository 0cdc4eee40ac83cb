"""Ray inference without a cluster: an address where nothing listens is one error naming the setting.
The runs on a cluster are tests/cluster/test_ray_inference.py."""

from __future__ import annotations

import socket

import pytest

from emo_assets.lib.ray_cluster import RayClusterError, check_reachable


def test_an_address_where_nothing_listens_names_emo_ray_address_and_the_run_config():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            with pytest.raises(
                RayClusterError,
                match=rf"Ray address '{address}' \(EMO_RAY_ADDRESS, or resources.ray.config.address in a run's config\): no Ray cluster answers there",
            ):
                check_reachable(address, timeout_s=5)
