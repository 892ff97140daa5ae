"""experiment=shakespeare_gpu (a CPU smoke here) and the GPU end-to-end tests of issue 18.

The ``gpu``-marked tests run the real CLI on CUDA and are skipped without it; they are written as they
run on a GPU box (``make test`` there runs them). None of them has run on a GPU yet: no GPU was lent.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, cli_in_process, compose_config, only_run_dir, run_cli, write_corpus

REPO = Path(__file__).resolve().parents[1]

# experiment=shakespeare_gpu shrunk to seconds on CPU: the recipe's own schedule, split and checkpointing.
RECIPE_SMOKE = [
    "experiment=shakespeare_gpu",
    "trainer=cpu",
    "model.hidden_size=32",
    "data.batch_size=4",
    "data.seq_len=16",
    "trainer.max_steps=30",
    "trainer.max_time=00:00:00:30",
    "scheduler.max_seconds=30",
    "scheduler.warmup_steps=5",
    "trainer.val_check_interval=10",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
    "sample.prompt=the",
]


def test_the_gpu_recipe_is_a_60_second_bf16_lstm_on_the_standard_split():
    cfg = compose_config(["experiment=shakespeare_gpu"])
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.num_layers) == (
        "lstm",
        1024,
        2,
    ) and cfg.model.dropout > 0
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert list(cfg.data.split) == [0.9, 0.1, 0.0]  # val = the last 10 %: the standard split, no test
    assert cfg.trainer.max_time == "00:00:01:00" and cfg.scheduler.max_seconds == 60
    assert cfg.trainer.gradient_clip_val > 0 and not cfg.optim.get(
        "fused"
    )  # Lightning refuses clipping with fused


@pytest.mark.slow
def test_the_gpu_recipe_runs_on_cpu_with_a_small_budget(tmp_path):
    write_corpus(tmp_path)
    proc = cli_in_process([*RECIPE_SMOKE, "data.path=tiny.txt"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 30 and metrics["test"] == {} and metrics["best_val_bpc"] < 6.0
    assert sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))  # the best checkpoint is kept


# --- on a GPU ---------------------------------------------------------------------------------


def tiny_run(root: Path, *extra: str, env: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_corpus(root)
    proc = run_cli(["data=text", "data.path=tiny.txt", *TINY_RUN, *extra], root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_run_dir(root)


@pytest.mark.parametrize("trainer", ["gpu", "gpu_bf16"])
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_trainers_train_test_and_keep_a_checkpoint(tmp_path, trainer):
    run = tiny_run(tmp_path, f"trainer={trainer}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 20 and 0 < metrics["best_val_bpc"] < 8 and "test/bpc" in metrics["test"]
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "accelerator: gpu" in config and ("bf16-mixed" in config) == (trainer == "gpu_bf16")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_run_killed_mid_epoch_resumes_to_the_uninterrupted_runs_metrics(tmp_path, sig):
    """Killed once mid-epoch (the first checkpoint for SIGKILL, 1 s into fit for SIGTERM), resumed.

    Bitwise equal: global_step, epochs and the learning-rate curve (functions of the step count alone: no
    scheduler.max_seconds here), and which steps TensorBoard holds. Within a tolerance (abs 0.02 bpc): the
    val/test losses, because trainer=gpu leaves deterministic off (conf/trainer/gpu.yaml) and cuDNN's LSTM
    backward and cuBLAS reductions sum in an order that changes from run to run; the RNG streams (CUDA's
    included, from the checkpoint) are the same, so only that rounding separates the two runs."""
    from conftest import tensorboard_history
    from test_resume import MID_EPOCH_RUN, final_metrics, kill_and_resume, lr_curve

    corpus = write_corpus(tmp_path)
    args = ["data=text", f"data.path={corpus}", "trainer=gpu", *MID_EPOCH_RUN]
    (tmp_path / "straight").mkdir()
    proc = run_cli(args, cwd=tmp_path / "straight")
    assert proc.returncode == 0, proc.stderr[-2000:]
    straight = only_run_dir(tmp_path / "straight")
    run, resumed = kill_and_resume(args, tmp_path / "killed", sig, 0.0 if sig == signal.SIGKILL else 1.0)
    assert resumed is not None, "the run finished before it could be stopped"
    expected, got = final_metrics(straight), final_metrics(run)
    assert (got["global_step"], got["epochs"]) == (expected["global_step"], expected["epochs"])
    assert lr_curve(run) == lr_curve(straight)
    steps = lambda h: {tag: [s for s, _ in points] for tag, points in h.items()}  # noqa: E731
    assert steps(tensorboard_history(run)) == steps(tensorboard_history(straight))
    assert got["best_val_bpc"] == pytest.approx(expected["best_val_bpc"], abs=0.02)
    for group in ("final", "test"):
        assert got[group].keys() == expected[group].keys()
        for key, value in expected[group].items():
            assert got[group][key] == pytest.approx(value, abs=0.02), (group, key)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_leased_sweep_packs_two_jobs_on_one_gpu(tmp_path):
    from test_device_lease import assert_slots_never_shared, sweep_leases

    leases = sweep_leases(tmp_path, ["trainer=gpu", "device_lease.pool=[0]", "device_lease.jobs_per_gpu=2"])
    assert all(lease["accelerator"] == "gpu" and lease["index"] == 0 for lease in leases)
    assert {lease["slot"] for lease in leases} <= {0, 1}
    assert_slots_never_shared(leases)  # at most two jobs on the GPU at any moment, one per slot


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_run_samples_and_scores_on_cpu(tmp_path):
    run = tiny_run(tmp_path, "trainer=gpu")
    best = json.loads((run / "metrics.json").read_text())["best_val_bpc"]
    cpu_only = {"CUDA_VISIBLE_DEVICES": ""}  # as on a machine without a GPU
    scored = run_cli(
        [str(run), "split=val", "device=cpu", "--json"], tmp_path, script="charrnn-eval", env=cpu_only
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    # Float32 on both, but cuDNN may run the LSTM's matmuls in TF32 on the GPU: equal to ~1e-3.
    assert json.loads(scored.stdout)["bpc"] == pytest.approx(best, abs=5e-3)
    sampled = run_cli(
        [str(run), "prompt=the", "length=50", "seed=3", "device=cpu"],
        tmp_path,
        script="charrnn-sample",
        env=cpu_only,
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sampled.stdout.startswith("the") and len(sampled.stdout.rstrip("\n")) >= 50


@pytest.mark.parametrize("trainer", ["gpu", "gpu_bf16"])
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_steps_do_no_host_sync(tmp_path, trainer):
    """torch.cuda.set_sync_debug_mode("error") over steps 3..12 of a real charrnn-train (sync_guard.py,
    a callback added through Hydra): a host sync anywhere in those steps (the project's hooks included)
    fails the run. Logging, validation and checkpoints, which read values to the host on purpose, fall
    outside the window."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    run = tiny_run(
        tmp_path,
        f"trainer={trainer}",
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=20",
        "+callbacks.sync_guard._target_=sync_guard.SyncGuard",
        "+callbacks.sync_guard.first=3",
        "+callbacks.sync_guard.last=12",
        env=env,
    )
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 20
    assert (run / "sync_guard.json").is_file()  # the guard was armed over every step of its window
    assert json.loads((run / "sync_guard.json").read_text()) == {"guarded_steps": list(range(3, 13))}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_sync_guard_fails_a_run_that_syncs(tmp_path):
    """The guard of test_training_steps_do_no_host_sync is live: one .item() in its window fails the run."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    write_corpus(tmp_path)
    guard = ["+callbacks.sync_guard._target_=sync_guard.SyncGuard", "+callbacks.sync_guard.first=3"]
    probe = ["+callbacks.sync_probe._target_=sync_guard.SyncProbe", "+callbacks.sync_probe.at=5"]
    args = ["data=text", "data.path=tiny.txt", *TINY_RUN, "trainer=gpu", "trainer.log_every_n_steps=20"]
    proc = run_cli([*args, *guard, "+callbacks.sync_guard.last=12", *probe], tmp_path, env=env)
    assert proc.returncode != 0 and "synchroniz" in proc.stderr, proc.stderr[-2000:]


def test_every_optimizer_leaves_the_kernel_choice_to_torch():
    """conf/optim/*: foreach and fused null, so torch takes its foreach kernels on CUDA by itself."""
    for optim in ("adam", "adamw", "sgd"):
        cfg = compose_config([f"optim={optim}"])
        assert cfg.optim.foreach is None and cfg.optim.fused is None, optim


@pytest.mark.parametrize("optim", ["adam", "adamw"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_optimizer_steps_with_foreach_kernels_on_cuda(optim, monkeypatch):
    """The project's optimizer (built as the module builds it) on CUDA parameters never runs torch's
    per-parameter loop."""
    import torch.optim.adam as adam
    from hydra.utils import instantiate

    used: list[str] = []
    for name in ("_single_tensor_adam", "_multi_tensor_adam", "_fused_adam"):
        real = getattr(adam, name)
        monkeypatch.setattr(adam, name, lambda *a, _n=name, _f=real, **k: (used.append(_n), _f(*a, **k))[1])
    model = torch.nn.LSTM(8, 16, num_layers=2).cuda()
    opt = instantiate(compose_config([f"optim={optim}"]).optim)(model.parameters())
    model(torch.randn(4, 3, 8, device="cuda"))[0].sum().backward()
    opt.step()
    assert used == ["_multi_tensor_adam"]
