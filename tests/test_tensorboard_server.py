"""A real TensorBoard server over a sweep directory: every job's run, val/bpc curve and hparams are served."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import read_scalars
from test_sweeps import job_dirs, shared_sweep

pytestmark = pytest.mark.slow
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tensorboard(tmp_path_factory, tmp_path):
    sweep, _ = shared_sweep(tmp_path_factory)
    port = free_port()
    log = open(tmp_path / "tensorboard.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(sweep),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield sweep, base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for_runs(base: str, proc: subprocess.Popen, expected: int, timeout: float = 90.0) -> list[str]:
    """Poll /data/runs until the server lists every run (it loads the logdir in the background)."""
    deadline = time.monotonic() + timeout
    runs: list[str] = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tensorboard exited"
        try:
            runs = get(f"{base}/data/runs")
            if len(runs) >= expected:
                return runs
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"tensorboard served {runs} after {timeout}s")


def test_tensorboard_serves_every_job_with_curve_and_hparams(tensorboard):
    sweep, base, proc = tensorboard
    jobs = job_dirs(sweep)
    runs = wait_for_runs(base, proc, len(jobs))
    assert sorted(runs) == sorted(f"{j.name}/tensorboard" for j in jobs)

    for job in jobs:
        run = f"{job.name}/tensorboard"
        served = get(
            f"{base}/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": run, "tag": "val/bpc"})
        )
        on_disk = read_scalars(job / "tensorboard")["val/bpc"]
        assert [(step, pytest.approx(value, rel=1e-6)) for _, step, value in served] == on_disk

    experiment = get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"model.hidden_size", "optim.lr", "model.cell", "data.seq_len"} <= hparams
    assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {"val/bpc", "val/bpc_best"}

    request = {
        "experimentName": "",
        "allowedStatuses": ALL_STATUSES,
        "colParams": [
            {"hparam": "model.hidden_size"},
            {"hparam": "optim.lr"},
            {"metric": {"tag": "val/bpc"}},
            {"metric": {"tag": "val/bpc_best"}},
        ],
        "startIndex": 0,
        "sliceSize": 100,
    }
    groups = get(f"{base}/data/plugin/hparams/session_groups", request)
    assert groups["totalSize"] == len(jobs)
    by_run = {g["name"]: g for g in groups["sessionGroups"]}
    for job in jobs:
        group = by_run[f"{job.name}/tensorboard"]
        metrics = json.loads((job / "metrics.json").read_text())
        assert f"model.hidden_size={int(group['hparams']['model.hidden_size'])}" in job.name
        assert f"optim.lr={group['hparams']['optim.lr']}" in job.name
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values["val/bpc_best"] == pytest.approx(metrics["best_val_bpc"], rel=1e-6)
        assert values["val/bpc"] == pytest.approx(metrics["final"]["val/bpc"], rel=1e-6)
