"""Every command we print works when pasted into a shell: ``continue with: charrnn-train resume=<dir>``."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from charrnn.cli.commands import resume_command
from conftest import TINY_RUN, cli_env, cli_in_process, script_path, write_corpus
from forked import fork_cli

PATHS = [
    "outputs/runs/2026-12-03/09-30-00_ab12",
    "/tmp/sweep/0_model.hidden_size=16,optim.lr=0.001",
    '/tmp/with space/it\'s/a "quoted" [dir]{x}',
    "/tmp/ends with a backslash\\",
    '/tmp/back\\slash\\"quote',
    "null",
    "1e3",
    "true",
]


@pytest.mark.parametrize("path", PATHS)
def test_a_printed_resume_command_reads_back_as_its_path_in_the_shell_and_in_hydra(path):
    words = shlex.split(resume_command(path))  # what the shell hands charrnn-train
    assert words[0] == "charrnn-train" and len(words) == 2
    (override,) = OverridesParser.create().parse_overrides([words[1]])
    assert override.key_or_group == "resume" and override.value() == path


@pytest.mark.slow
def test_the_continue_line_of_a_stopped_sweep_job_works_when_pasted(tmp_path):
    """A sweep job dir holds ``=`` and ``,``: the stop line's and charrnn-report's command resume it.
    The stopped sweep and the pasted command are real processes (the first forked from this worker, the
    latter the console script a shell runs)."""
    corpus = write_corpus(tmp_path)
    args = ["-m", "data=text", f"data.path={corpus}", *TINY_RUN, "trainer.max_steps=100000", "optim.lr=1e-3"]
    bin_dir = os.path.dirname(script_path())
    env = cli_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    child = fork_cli(args, cwd=tmp_path, env=env)
    deadline = time.time() + 120
    while (
        not list(tmp_path.glob("outputs/multirun/*/*/0_*/checkpoints/last.ckpt")) and time.time() < deadline
    ):
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr[-2000:]
    (job,) = tmp_path.glob("outputs/multirun/*/*/0_*")
    assert "=" in job.name and "," in job.name
    command = stderr.strip().splitlines()[-1].partition("continue with: ")[2]
    assert command == resume_command(job)

    report = cli_in_process([str(job.parent)], cwd=tmp_path, script="charrnn-report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"continue with: {command}" in " ".join(report.stdout.split())  # rich may fold the long line

    step = json.loads((job / "run.json").read_text())["global_step"]
    pasted = subprocess.run(
        ["bash", "-c", f"{command} trainer.max_steps={step + 5}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["global_step"] == step + 5
