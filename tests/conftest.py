"""Shared fixtures of the test suite.

* Servers and stores (fixtures_servers.py): ``s3_server`` / ``s3_server_process`` (the session's
  moto_server, fake AWS credentials in the environment), ``mlflow_server`` / ``mlflow_server_process``
  (the session's ``mlflow server``, SQLite backend, artifacts in moto), ``own_moto`` (a moto_server
  of the test's own), ``auth_moto`` (one with IAM authentication on), ``local_tracking`` (runs track to
  the SQLite file under their output root).
* The small synthetic config: ``synthetic_config`` / ``synthetic_settings`` (fixtures_config.py) are
  plain functions, since test files build module-level constants from them; ``synthetic`` is the
  first as a fixture.

Fast subset: ``pytest -m "not slow"`` leaves out the tests marked ``slow`` (over about 4 s: end-to-end
runs, subprocess training, the ``mlflow server``); the full suite runs everything. A test file marks
its own slow tests; ``SLOW`` below marks those of files that carry no marks.
"""
from __future__ import annotations

import pytest

from fixtures_config import synthetic_config
from fixtures_servers import (auth_moto, local_tracking, mlflow_server, mlflow_server_process, own_moto, s3_server,
                              s3_server_process)

__all__ = ["auth_moto", "local_tracking", "mlflow_server", "mlflow_server_process", "own_moto", "s3_server",
           "s3_server_process", "synthetic"]


SLOW = frozenset({
    "tests/test_statistics.py::test_a_run_records_statistics_equal_to_those_of_its_logits_and_resumes_bit_identically",
    "tests/test_statistics.py::test_a_statistics_only_run_keeps_no_logits_and_scores_through_the_stages",
})


def pytest_collection_modifyitems(items):
    """Mark the tests named in ``SLOW`` (by node id without parameters) ``slow``."""
    for item in items:
        if item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def synthetic():
    """:func:`fixtures_config.synthetic_config`, for a test that builds its config in its body."""
    return synthetic_config
