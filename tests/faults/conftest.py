"""The training tests' tiny models, for the fault tests that train."""

from tests.train.conftest import tiny_sd1  # noqa: F401 - fixture
