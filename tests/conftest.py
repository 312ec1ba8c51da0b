"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from esn_video.cloud.azurite import Azurite


@pytest.fixture
def azurite(tmp_path):
    "A real Azurite Blob service on loopback with its own data folder and random key; stopped after the test."
    az = Azurite(tmp_path / "azurite").start()
    yield az
    az.kill()
