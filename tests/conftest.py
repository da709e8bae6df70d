"""Shared fixtures: the plugin is loaded once for the whole test session."""
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

settings.register_profile('ci', deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci')


@pytest.fixture(scope='session', autouse=True)
def plugin():
    import mxnet_bnq
    return mxnet_bnq.load()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
