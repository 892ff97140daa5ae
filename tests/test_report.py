"""``charrnn-report``: the table, report.md, report.csv and report.png of real sweeps."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import run_cli
from test_sweeps import job_dirs, shared_failing_sweep, shared_sweep

pytestmark = pytest.mark.slow


def report(sweep, tmp_path):
    return run_cli([str(sweep)], cwd=tmp_path, script="charrnn-report")


def test_report_of_a_finished_sweep(tmp_path_factory, tmp_path):
    sweep, _ = shared_sweep(tmp_path_factory)
    proc = report(sweep, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = {j.name.split("_")[0]: json.loads((j / "metrics.json").read_text()) for j in job_dirs(sweep)}
    ranked = sorted(metrics, key=lambda n: metrics[n]["best_val_bpc"])

    # The table: every job, best first, with its swept values and best val/bpc.
    rows = [line for line in proc.stdout.splitlines() if " done " in line]
    assert [line.split("│")[1].strip() for line in rows] == ranked
    assert "model.hidden_size" in proc.stdout and "optim.lr" in proc.stdout
    for n in ranked:
        assert f"{metrics[n]['best_val_bpc']:.4f}" in proc.stdout

    with open(sweep / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == ranked
    for r in table:
        m = metrics[r["job"]]
        assert float(r["best_val_bpc"]) == pytest.approx(m["best_val_bpc"]) and float(
            r["final_val_bpc"]
        ) == pytest.approx(m["final"]["val/bpc"])
        assert (r["status"], int(r["steps"]), int(r["epochs"]), r["checkpoint"]) == (
            "done",
            m["global_step"],
            m["epochs"],
            m["best_checkpoint"],
        )
        assert float(r["wall_seconds"]) == pytest.approx(m["wall_seconds"], abs=1e-3)
        assert r["model.hidden_size"] in ("16", "32") and float(r["optim.lr"]) in (1e-3, 3e-3)

    md = (sweep / "report.md").read_text()
    assert "4 jobs: 4 done, 0 running, 0 failed" in md and md.count("| done |") == 4 and "report.png" in md

    import matplotlib.image

    png = sweep / "report.png"
    assert png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 900 and image.std() > 0.01


def test_report_of_a_sweep_with_a_failed_job(tmp_path_factory, tmp_path):
    sweep, _ = shared_failing_sweep(tmp_path_factory)
    proc = report(sweep, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "job 1 failed: unknown model.cell='bogus'" in proc.stdout
    with open(sweep / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["job"], r["model.cell"], r["status"]) for r in table] == [
        ("0", "gru", "done"),
        ("1", "bogus", "failed"),
    ]
    assert table[1]["error"].startswith("unknown model.cell='bogus'") and table[1]["best_val_bpc"] == ""
    md = (sweep / "report.md").read_text()
    assert (
        "1 done, 0 running, 1 failed" in md and "## Failed jobs" in md and "unknown model.cell='bogus'" in md
    )
    assert (sweep / "report.png").stat().st_size > 10_000


def test_report_of_a_sweep_in_progress(tmp_path_factory, tmp_path):
    sweep, _ = shared_sweep(tmp_path_factory)
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for name in ("report.md", "report.csv", "report.png"):
        (copy / name).unlink(missing_ok=True)
    running = job_dirs(copy)[1]
    done = json.loads((running / "metrics.json").read_text())
    (running / "metrics.json").unlink()  # as if job 1 were still training
    (running / "run.json").unlink(missing_ok=True)
    proc = report(copy, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(copy / "report.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["job"] == "1")
    # Read from its TensorBoard scalars so far.
    assert row["status"] == "running" and float(row["best_val_bpc"]) == pytest.approx(
        done["best_val_bpc"], rel=1e-6
    )
    assert int(row["steps"]) == done["global_step"]
    assert "3 done, 1 running, 0 failed" in (copy / "report.md").read_text()


def test_bad_input_is_one_sentence_and_exit_2(tmp_path):
    for target in (tmp_path / "missing", tmp_path):
        proc = report(target, tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert (
            len(lines) == 1
            and lines[0].startswith("charrnn-report: error:")
            and "Traceback" not in proc.stderr
        )


def damaged_copy(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for name in ("report.md", "report.csv", "report.png"):
        (copy / name).unlink(missing_ok=True)
    return copy, job_dirs(copy)


def report_in_process(sweep, capsys):
    from charrnn.cli.report import main

    try:
        main([str(sweep)])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_done_job_with_a_truncated_metrics_json_is_done(tmp_path_factory, tmp_path, capsys):
    copy, jobs = damaged_copy(shared_sweep(tmp_path_factory)[0], tmp_path)
    run = json.loads((jobs[1] / "run.json").read_text())
    assert run["status"] == "done"
    text = (jobs[1] / "metrics.json").read_text()
    (jobs[1] / "metrics.json").write_text(text[: len(text) // 2])
    code, out, err = report_in_process(copy, capsys)
    assert code == 0, err
    with open(copy / "report.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["job"] == "1")
    assert row["status"] == "done" and float(row["best_val_bpc"]) == pytest.approx(run["best_val_bpc"])
    assert int(row["steps"]) == run["global_step"]
    assert "4 jobs: 4 done, 0 running" in (copy / "report.md").read_text()
    assert err.strip().splitlines() == [
        f"charrnn-report: warning: job 1 ({jobs[1].name}): metrics.json is damaged; "
        "its figures come from run.json and TensorBoard"
    ]


def test_damaged_overrides_and_metrics_of_the_wrong_types_are_one_line_each(
    tmp_path_factory, tmp_path, capsys
):
    copy, jobs = damaged_copy(shared_sweep(tmp_path_factory)[0], tmp_path)
    (jobs[0] / ".hydra" / "overrides.yaml").write_text("- model.hidden_size=16\n- [unclosed\n : :")
    (jobs[2] / ".hydra" / "overrides.yaml").write_text("model.hidden_size: 16\n")  # YAML, but not a list
    metrics = json.loads((jobs[3] / "metrics.json").read_text())
    metrics.update(
        best_val_bpc="1.5", final=[1.0], epochs="two", global_step=3.5, wall_seconds=None, best_checkpoint=7
    )
    (jobs[3] / "metrics.json").write_text(json.dumps(metrics))
    code, out, err = report_in_process(copy, capsys)
    assert code == 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("charrnn-report: warning: job ") for line in lines), err
    assert ".hydra/overrides.yaml is damaged" in lines[0] and ".hydra/overrides.yaml is damaged" in lines[1]
    assert (
        "metrics.json holds values of the wrong type (best_val_bpc, epochs, global_step, final, "
        "best_checkpoint)" in lines[2]
    )
    with open(copy / "report.csv", newline="") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert (table["3"]["status"], table["3"]["best_val_bpc"], table["3"]["steps"]) == ("done", "", "")
    assert table["0"]["status"] == "done" and table["0"]["overrides"] == ""
    assert table["1"]["model.hidden_size"] in ("16", "32")  # the undamaged jobs keep their swept values


def test_a_read_only_sweep_dir_prints_the_table_and_one_sentence(tmp_path_factory, tmp_path, capsys):
    import subprocess

    copy, _ = damaged_copy(shared_sweep(tmp_path_factory)[0], tmp_path)
    bound = subprocess.run(["mount", "--bind", str(copy), str(copy)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bound.stderr.strip()}")
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(copy)], capture_output=True, text=True
        )
        assert remounted.returncode == 0, remounted.stderr
        code, out, err = report_in_process(copy, capsys)
    finally:
        subprocess.run(["umount", str(copy)], check=False)
    assert code == 2 and out.count(" done ") == 4, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"charrnn-report: error: cannot write '{copy / 'report.md'}': "
    ), err
    assert "read-only" in lines[0] and not (copy / "report.md").exists()
