"""A run dir on a read-only file system: resume= is one sentence and exit 2 (Hydra opens the job's log file
there before charrnn's code runs), not logging's 54-line "Unable to configure handler 'file'"."""

from __future__ import annotations

import subprocess

import pytest

from conftest import cli_in_process, copy_run

pytestmark = pytest.mark.slow


def test_resume_of_a_run_on_a_read_only_file_system_is_one_sentence(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / "run")
    bound = subprocess.run(["mount", "--bind", str(run), str(run)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bound.stderr.strip()}")
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(run)], capture_output=True, text=True
        )
        assert remounted.returncode == 0, remounted.stderr
        proc = cli_in_process([f"resume={run}", "trainer.max_steps=30"], cwd=tmp_path)
    finally:
        subprocess.run(["umount", str(run)], check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"charrnn-train: error: cannot write '{run}/") and "read-only" in lines[0]
    assert "resume=" in lines[0]
