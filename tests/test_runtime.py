import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
from catsdogs import runtime
runtime.configure(threads=1, onednn=False)
tf = runtime.tensorflow()
import os
print(runtime.speed_settings(), os.environ["TF_ENABLE_ONEDNN_OPTS"],
      tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


def test_speed_settings_apply_before_tensorflow_starts():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["{'threads':", "1,", "'onednn':", "False}", "0", "1", "1"]


def test_defaults_use_every_core_and_onednn():
    probe = "from catsdogs import runtime; runtime.tensorflow(); print(runtime.speed_settings())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    import os

    assert out.strip() == f"{{'threads': {os.cpu_count()}, 'onednn': True}}"
