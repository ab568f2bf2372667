"""tools.fuzz_atheris: the atheris harness's input layout (byte 0 picks the seed label) and corpus,
without atheris; a short coverage-guided run when atheris is installed (the `atheris` extra)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tools import fuzz_atheris, fuzz_inputs


def test_the_first_byte_picks_the_label_and_the_rest_is_parsed(tmp_path):
    target = fuzz_inputs.TARGETS["firmware"]
    labels = sorted({label for label, _ in target.seeds()})
    fuzz_atheris.write_corpus(target, labels, tmp_path)
    files = sorted(tmp_path.iterdir())
    assert len(files) == len(target.seeds())
    for path in files[:3]:
        fuzz_atheris.one_input(target, labels, path.read_bytes())  # seeds parse
        fuzz_atheris.one_input(target, labels, path.read_bytes()[:40])  # truncated: typed errors
    fuzz_atheris.one_input(target, labels, b"")


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install -e '.[atheris]')")
def test_a_short_atheris_run_of_the_msgpack_target(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "tools.fuzz_atheris", "msgpack", "-runs=500"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": root},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Done 500 runs" in done.stderr
