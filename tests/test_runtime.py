import os
import subprocess
import sys
from pathlib import Path

import pytest

from catsdogs.runtime import error_line

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
from catsdogs import runtime
runtime.configure(threads=1, onednn=False)
tf = runtime.tensorflow()
import os
print(runtime.speed_settings(), os.environ["TF_ENABLE_ONEDNN_OPTS"],
      tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


@pytest.mark.e2e  # each starts TensorFlow in a new process: what happens before it starts is the point
def test_speed_settings_apply_before_tensorflow_starts():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["{'threads':", "1,", "'onednn':", "False}", "0", "1", "1"]


NOISY_START = """
import os
os.write(2, b"before\\n")
from catsdogs import runtime
runtime.tensorflow()
print(runtime.resolve_precision("auto"), runtime.speed_settings())
"""


@pytest.mark.e2e
def test_tensorflow_starts_on_every_core_with_onednn_and_without_its_cpp_chatter():
    """By default TensorFlow starts with a thread per core and oneDNN on. absl prints TensorFlow's start-up block
    (twice) and, on a CPU-only machine, a cuInit "error" before TF_CPP_MIN_LOG_LEVEL can act; with catsdogs'
    default level nothing of it reaches the terminal, and the lines the program writes itself do."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", NOISY_START], capture_output=True, text=True, cwd=ROOT,
                           env=env, check=True)
    assert quiet.stderr == "before\n", quiet.stderr
    assert quiet.stdout.split(maxsplit=1)[1].strip() == f"{{'threads': {os.cpu_count()}, 'onednn': True}}"
    chatty = subprocess.run([sys.executable, "-c", NOISY_START], capture_output=True, text=True, cwd=ROOT,
                            env=env | {"TF_CPP_MIN_LOG_LEVEL": "0"}, check=True)
    assert "I0000" in chatty.stderr  # asked for: shown


def test_captured_native_lines_other_than_the_noise_are_written_back(capfd):
    from catsdogs.runtime import native_noise, native_stderr_without

    with native_stderr_without(native_noise()):
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"E0000 00:00:1.0 1 something.cc:1] a real error\n")
        print("a Python line", file=sys.stderr)
    kept = capfd.readouterr().err.splitlines()
    assert sorted(kept) == ["E0000 00:00:1.0 1 something.cc:1] a real error", "a Python line"]


def test_a_multi_line_model_error_is_one_line_saying_what_went_wrong():
    graph_error = RuntimeError("Graph execution error:\n\nDetected at node model/stem/convolution defined at (most "
                               "recent call last):\n  File \"cli.py\", line 8, in <module>\nOperation received an "
                               "exception: could not create a primitive descriptor\n\t [[{{node stem}}]] [Op:x]")
    line = error_line(graph_error)
    assert "\n" not in line and "stem" not in line and "File" not in line
    assert line == ("RuntimeError: Graph execution error: Operation received an exception: could not create a "
                    "primitive descriptor")
    assert error_line(ZeroDivisionError("division by zero")) == "ZeroDivisionError: division by zero"
    assert error_line(ValueError()) == "ValueError" and len(error_line(ValueError("x" * 999))) == 240
