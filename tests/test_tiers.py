"""The suite's tiers (README, "Tests"): each test in one, and the unit tier kept to this process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import run_cli

TIERS = ("unit", "e2e", "realdata")


def test_every_collected_test_is_in_exactly_one_tier(request: pytest.FixtureRequest):
    tiers = {item.nodeid: [t for t in TIERS if item.get_closest_marker(t)] for item in request.session.items}
    assert {node: found for node, found in tiers.items() if len(found) != 1} == {}


def test_a_unit_test_that_starts_python_is_told_to_move_to_the_e2e_tier():
    with pytest.raises(AssertionError, match=r"starts .*python.*mark it @pytest.mark.e2e"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(AssertionError, match="mark it @pytest.mark.e2e"):
        subprocess.run("echo hi", shell=True, check=False)  # /bin/sh


def test_a_command_run_in_process_leaves_the_process_as_it_was(tmp_path):
    before_env, before_signal = dict(os.environ), signal.getsignal(signal.SIGTERM)
    result = run_cli("run", "--seed", "-1", "--workdir", str(tmp_path / "w"), CATSDOGS_EPOCHS="3")
    assert result.returncode == 2 and result.stderr.startswith("catsdogs: ") and "seed" in result.stderr
    assert dict(os.environ) == before_env and signal.getsignal(signal.SIGTERM) == before_signal
