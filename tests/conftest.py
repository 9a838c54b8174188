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


# the longest end-to-end tests (minutes each on 2 cores): run first, so that with two xdist workers
# they overlap the many short tests instead of being the last ones left (a scheduling hint only)
LONGEST_FIRST = (
    "tests/test_pipeline_local.py::test_tdds_run_end_to_end_then_cached_rerun",
    "tests/test_cpu_protocol.py::test_cpu_protocol_smoke_mode",
    "tests/test_cache_identity.py::test_a_cached_run_is_not_trusted_against_another_store_or_tracker",
    "tests/test_reprune_s3.py::test_reprune_on_a_growing_s3_manifest_with_s3_output",
    "tests/test_reprune.py::test_reprune_pipeline_on_a_growing_imagefolder",
    "tests/test_extending.py::test_a_plugin_method_and_stage_run_in_the_grid_and_the_pipeline",
    "tests/test_gpu_suite.py::test_gpu_suite_smoke_mode",
    "tests/test_notebook.py::test_notebook_runs_locally",
)


def pytest_collection_modifyitems(items):
    """Mark the tests named in ``SLOW`` (by node id without parameters) ``slow``; put
    :data:`LONGEST_FIRST` at the front, in that order."""
    for item in items:
        if item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
    rank = {nodeid: i for i, nodeid in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0], len(rank)))   # stable: the rest keep their order


@pytest.fixture
def synthetic():
    """:func:`fixtures_config.synthetic_config`, for a test that builds its config in its body."""
    return synthetic_config
