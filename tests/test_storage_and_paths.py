"""A full disk, damaged run files, and paths with '=' and spaces, through the console scripts."""

from __future__ import annotations

import subprocess

import pytest

from charrnn.cli.rundir import load_run
from conftest import TINY_RUN, cli_in_process, copy_run, write_corpus

pytestmark = pytest.mark.slow


def test_a_full_disk_is_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        write_corpus(tmp_path)
        args = [
            "data=text",
            f"data.path={tmp_path / 'tiny.txt'}",
            *TINY_RUN,
            "model.hidden_size=64",
            "trainer.max_steps=60",
            "trainer.val_check_interval=5",
            f"hydra.run.dir={disk / 'run'}",
        ]
        proc = cli_in_process(args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and lines[-1].startswith("charrnn-train: error: cannot write"), (
            proc.stderr[-2000:]
        )
        assert "no space left" in lines[-1] and "Traceback" not in proc.stderr
        kept = sorted((disk / "run" / "checkpoints").glob("*.ckpt"))
        # Whole, loadable files only: each loads, with the step it was saved at (validation every 5 steps).
        assert kept and all(load_run(p).checkpoint["global_step"] % 5 == 0 for p in kept), kept
        assert not list((disk / "run" / "checkpoints").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_sample_and_eval_take_any_path(finished_run, tmp_path):
    odd = copy_run(finished_run, tmp_path / "a run=1 with spaces")
    sample = cli_in_process([str(odd), "length=5", "seed=0"], cwd=tmp_path, script="charrnn-sample")
    assert sample.returncode == 0, sample.stderr[-2000:]
    text = write_corpus(tmp_path, "some text=1.txt")
    evaluated = cli_in_process(
        [str(odd / "checkpoints" / "last.ckpt"), f"path={text}", "--json"],
        cwd=tmp_path,
        script="charrnn-eval",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]


def test_eval_of_a_run_with_a_damaged_config_is_one_sentence(finished_run, tmp_path):
    damaged = copy_run(finished_run, tmp_path / "damaged")
    (damaged / ".hydra" / "config.yaml").write_text("data: [unclosed\n : :")
    proc = cli_in_process([str(damaged), "split=val"], cwd=tmp_path, script="charrnn-eval")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "damaged" in lines[0] and "config.yaml" in lines[0], (
        proc.stderr[-2000:]
    )
