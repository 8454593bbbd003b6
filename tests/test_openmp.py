"""The entry points shorten OpenMP's busy-wait before torch loads (zoo/openmp.py), unless the user set it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# runs an entry point's module code (with --help) and prints GOMP_SPINCOUNT as it was when torch was first imported
# (libgomp reads it then), or at the end when nothing imported torch
PROBE = """import os, runpy, sys
seen = []
class Watch:
    def find_spec(self, name, path, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
sys.meta_path.insert(0, Watch())
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="not_main")
except SystemExit:
    pass
print(seen[0] if seen else os.environ.get("GOMP_SPINCOUNT"))
"""


def _probe(script: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", PROBE.format(script=script)], cwd=REPO, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


@pytest.mark.parametrize("script", ["train.py", "zoo/bench/__main__.py"])
def test_entry_points_set_the_spin_count_before_torch_loads(script):
    assert _probe(script) == "10000"


@pytest.mark.parametrize("env, expected", [({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "active"}, "None")])
def test_a_setting_of_the_user_is_kept(env, expected):
    assert _probe("train.py", **env) == expected
