"""Hooks for ``pytest conformance``: everything lives in conformance.plugin."""

import os

from hypothesis import HealthCheck, settings

from conformance.plugin import (  # noqa: F401 - pytest finds hooks and fixtures by name
    impl,
    impl_state,
    pytest_addoption,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_collectreport,
    pytest_configure,
    pytest_itemcollected,
    pytest_keyboard_interrupt,
    pytest_report_header,
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
    pytest_unconfigure,
    pytest_xdist_node_collection_finished,
)

settings.register_profile(
    "conformance-ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "conformance-dev",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# its own variable: hypothesis loads a built-in "ci" profile whenever CI is set
settings.load_profile(os.environ.get("DL_CH2_HYPOTHESIS_PROFILE", "conformance-ci"))
