"""Bad input, crashes and untrusted checkpoints, through ``charrnn-train``: mostly in this process, one case
per kind of exit path (a user error, a storage error, a config error) through the real console script."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn.cli.rundir import load_run, read_checkpoint
from charrnn.core.errors import UserError
from charrnn.lit.checkpoint_io import SafeCheckpointIO
from conftest import (
    TINY_RUN,
    TINY_TEXT,
    cli_in_process,
    copy_run,
    only_run_dir,
    run_cli,
    train_in_process,
    write_corpus,
)
from forked import fork_cli

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``: proof that nothing was touched."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_evil_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint whose pickle runs ``touch marker`` when unpickled by a trusting loader."""
    code = (
        "import os, sys, torch\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        "torch.save({'state_dict': {}, 'hyper_parameters': {'vocab': 'ab'}, 'evil': Evil()}, "
        f"{str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not marker.exists()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, finished_run) -> dict[str, Path]:
    """A copy of the session's finished tiny run, plus the bad files the cases below point at."""
    root = tmp_path_factory.mktemp("reliability")
    corpus = write_corpus(root)
    files = {"root": root, "corpus": corpus, "run": copy_run(finished_run, root / "run")}
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(b"text\x00\x01\x02more")
    (root / "latin1.txt").write_bytes("caf\u00e9 ol\u00e9 ".encode("latin-1") * 300)
    (root / "short.txt").write_text("just a few words")
    (root / "adir").mkdir()
    (root / "notackpt.ckpt").write_text("hello")
    last = (files["run"] / "checkpoints" / "last.ckpt").read_bytes()
    (root / "truncated.ckpt").write_bytes(last[: len(last) // 2])
    write_evil_checkpoint(root / "evil.ckpt", root / "PWNED")
    for key, name, text in (
        ("BAD_CONFIG", ".hydra/config.yaml", "model: [unclosed\n  : :"),
        ("BAD_RECORD", "run.json", '{"status": "runn'),
    ):
        files[key] = root / key.lower()
        shutil.copytree(files["run"], files[key])
        (files[key] / name).write_text(text)
    return files


def data(path: str) -> list[str]:
    return ["data=text", f"data.path=@/{path}"]  # @/: the workspace, filled in by the test


# (case name, overrides relative to the workspace, words the one-line message must hold)
BAD_INPUTS = [
    ("missing corpus", data("nope.txt"), ["does not exist"]),
    ("directory as corpus", data("adir"), ["is a directory"]),
    ("empty corpus", data("empty.txt"), ["is empty"]),
    ("corpus too short", data("short.txt"), ["split", "seq_len"]),
    ("not utf-8", data("latin1.txt"), ["not valid utf-8", "byte offset 3", "data.encoding"]),
    ("binary file", data("binary.txt"), ["NUL byte", "binary"]),
    ("hidden_size < 1", ["model.hidden_size=0"], ["model.hidden_size", "at least 1"]),
    ("num_layers < 1", ["model.num_layers=0"], ["model.num_layers"]),
    ("seq_len < 1", ["data.seq_len=0"], ["data.seq_len"]),
    ("batch_size < 1", ["data.batch_size=-3"], ["data.batch_size"]),
    ("lr <= 0", ["optim.lr=0"], ["optim.lr", "greater than 0"]),
    ("dropout >= 1", ["model.dropout=1.0"], ["model.dropout", "[0, 1)"]),
    ("dropout < 0", ["model.dropout=-0.1"], ["model.dropout"]),
    ("empty val split", ["data.split=[1.0,0.0,0.0]"], ["data.split", "empty"]),
    ("max_steps nonsense", ["trainer.max_steps=0"], ["trainer.max_steps"]),
    ("max_epochs nonsense", ["trainer.max_epochs=-5"], ["trainer.max_epochs"]),
    ("no end", ["trainer.max_steps=-1", "trainer.max_epochs=-1"], ["no end"]),
    ("unknown cell", ["model.cell=transformer"], ["model.cell", "lstm"]),
    ("not a number", ["data.seq_len=abc"], ["data.seq_len", "whole number"]),
    ("gpu without cuda", ["trainer=gpu"], ["GPU", "trainer=cpu"]),
    ("gpu devices", ["trainer=gpu", "trainer.devices=4"], ["4 CUDA GPU"]),
    ("truncated checkpoint", ["ckpt_path=@/truncated.ckpt"], ["not a checkpoint"]),
    ("not a checkpoint", ["ckpt_path=@/notackpt.ckpt"], ["not a checkpoint"]),
    ("missing checkpoint", ["ckpt_path=@/nothere.ckpt"], ["does not exist"]),
    ("unsafe checkpoint", ["ckpt_path=@/evil.ckpt"], ["refusing to load", "could run code"]),
    ("vocab mismatch", ["RUN_LAST", "data=hello"], ["vocabulary"]),
    ("model mismatch", ["RUN_LAST", "model.hidden_size=32"], ["different model", "hidden_size"]),
    ("resume a non-run", ["resume=@/adir"], ["not a run directory"]),
    ("lr nan", ["optim.lr=nan"], ["optim.lr", "finite"]),
    ("lr inf", ["optim.lr=inf"], ["optim.lr", "finite"]),
    ("weight decay < 0", ["optim.weight_decay=-1"], ["optim.weight_decay"]),
    ("seed < 0", ["seed=-1"], ["seed", "[0, 4294967295]"]),
    ("dropout nan", ["model.dropout=nan"], ["model.dropout", "finite"]),
    ("split nan", ["data.split=[0.9,nan,0.05]"], ["data.split", "finite"]),
    ("warmup < 0", ["scheduler.warmup_steps=-1"], ["scheduler.warmup_steps"]),
    ("temperature 0", ["sample.temperature=0"], ["sample.temperature", "greater than 0"]),
    ("max_chars 0", ["data.max_chars=0"], ["data.max_chars"]),
    ("val interval 0", ["trainer.val_check_interval=0"], ["trainer.val_check_interval"]),
    ("log interval 0", ["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps"]),
    ("run dir cannot be made", ["hydra.run.dir=/proc/charrnn-run"], ["cannot write", "hydra.run.dir="]),
    ("run dir under a file", ["hydra.run.dir=tiny.txt/run"], ["cannot write", "not a directory"]),
    ("fewer val targets than streams", ["data.batch_size=400"], ["val split", "data.batch_size=400"]),
    ("resume: damaged config", ["resume=BAD_CONFIG"], ["damaged", "config.yaml"]),
    ("resume: damaged run.json", ["resume=BAD_RECORD"], ["damaged", "run.json"]),
    ("embed_dim without embedding", ["model.embed_dim=32"], ["model.embed_dim=32", "model.input=embedding"]),
    ("embed_dim 0", ["model.input=embedding", "model.embed_dim=0"], ["model.embed_dim", "at least 1"]),
    (
        "early stopping on a metric never logged",
        ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val/nope"],
        ["callbacks.early_stopping.monitor='val/nope'", "val/bpc"],
    ),
    (
        "Lightning refuses a value",
        ["trainer.val_check_interval=1.0", "trainer.check_val_every_n_epoch=null"],
        ["Trainer refused", "check_val_every_n_epoch"],
    ),
]


# Hydra makes the run dir before any code of ours runs: these go through the console script's entry point.
STORAGE_CASES = {"run dir cannot be made", "run dir under a file"}
# One storage error and one user error through the real console script: the one-line plumbing of a process
# (stderr, exit code 2); the other storage case calls the same entry point in this process.
SUBPROCESS_CASES = {"run dir cannot be made", "missing corpus"}


def bad_input_args(workspace: dict[str, Path], overrides: list[str]) -> list[str]:
    root, run = workspace["root"], workspace["run"]
    args = [
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" if o == "RUN_LAST" else o.replace("@/", f"{root}/")
        for o in overrides
    ]
    args = [
        f"resume={workspace[a.split('=')[1]]}" if a in ("resume=BAD_CONFIG", "resume=BAD_RECORD") else a
        for a in args
    ]
    if not any(a.startswith(("data=", "resume=")) for a in args):
        args = data(str(workspace["corpus"].name)) + args
        args = [a.replace("@/", f"{root}/") for a in args]
    return [*TINY_RUN, *args]


def without_resume_records(
    files: dict[str, str],
) -> dict[str, str]:  # a refused resume adds only its own .hydra/resume-<id>/
    return {k: v for k, v in files.items() if not k.startswith(".hydra/resume-")}


@pytest.mark.parametrize("name,overrides,words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_clear_sentence(workspace, name, overrides, words, tmp_path):
    """Composed by Hydra and run through everything charrnn-train does below Hydra's main, in this process;
    the cases in SUBPROCESS_CASES go through the real console script (stderr, exit code 2)."""
    if name.startswith("gpu") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    root, run = workspace["root"], workspace["run"]
    before = snapshot(run)
    damaged = {k: without_resume_records(snapshot(workspace[k])) for k in ("BAD_CONFIG", "BAD_RECORD")}
    args = bad_input_args(workspace, overrides)
    if name in SUBPROCESS_CASES | STORAGE_CASES:
        proc = (run_cli if name in SUBPROCESS_CASES else cli_in_process)(args, cwd=root)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("charrnn-train: error: "), proc.stderr[-2000:]
        message = lines[0]
        assert "Traceback" not in proc.stderr and "Epoch" not in proc.stdout  # no training work began
    else:
        out = tmp_path / "out"
        with pytest.raises(UserError) as refused:
            train_in_process(args, out)
        message = str(refused.value)
        assert "\n" not in message
        assert (
            not (out / "tensorboard").exists() and not (out / "checkpoints").exists()
        )  # no training work began
        if (out / "run.json").exists():  # refused once the corpus was read: the record says so
            assert json.loads((out / "run.json").read_text())["status"] == "failed"
    for word in words:
        assert word in message, message
    assert "check the spelling" not in message  # that hint is for unknown keys only
    assert snapshot(run) == before
    for key, files in damaged.items():
        assert without_resume_records(snapshot(workspace[key])) == files
    assert not (root / "PWNED").exists()


@pytest.mark.parametrize(
    "override,words",
    [
        ("model.hiden_size=3", ["model.hiden_size", "not in struct"]),
        ("model=grux", ["model/grux", "gru, lstm, rnn"]),
    ],
)
def test_hydra_config_errors_are_one_line(workspace, override, words):
    """The first through the real console script (a config error's plumbing), the second in this process."""
    call = run_cli if override.startswith("model.") else cli_in_process
    proc = call([override], cwd=workspace["root"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("charrnn-train: error: "), (
        proc.stderr
    )
    assert all(w in lines[0] for w in words) and "HYDRA_FULL_ERROR" not in lines[0]


@pytest.mark.parametrize("script,args", [("charrnn-sample", ["length=5"]), ("charrnn-eval", ["split=val"])])
def test_sample_and_eval_refuse_an_unsafe_checkpoint(workspace, script, args):
    root = workspace["root"]
    proc = cli_in_process([str(root / "evil.ckpt"), *args], cwd=root, script=script)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "refusing to load" in lines[0], proc.stderr[-2000:]
    assert not (root / "PWNED").exists()


def test_unsafe_checkpoint_is_never_unpickled(workspace):
    root = workspace["root"]
    with pytest.raises(UserError, match="refusing"):
        read_checkpoint(root / "evil.ckpt")
    with pytest.raises(UserError, match="refusing"):
        SafeCheckpointIO().load_checkpoint(root / "evil.ckpt")
    assert not (root / "PWNED").exists()


def test_diverging_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, corpus):
    args = [
        "data=text",
        f"data.path={corpus}",
        "model=rnn",
        "model.hidden_size=16",
        "trainer.max_steps=60",
        "trainer.val_check_interval=2",
        "optim=sgd",
        "optim.momentum=0",
        "optim.lr=1e35",
        "scheduler=cosine",
        "scheduler.warmup_steps=20",
        "trainer.gradient_clip_val=null",
        "trainer.enable_progress_bar=false",
    ]
    proc = cli_in_process(args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        "training loss became" in lines[-1] and " at step " in lines[-1] and "Traceback" not in proc.stderr
    ), proc.stderr[-2000:]
    run = only_run_dir(tmp_path)
    last = load_run(run / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in last.model.parameters())
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": {}}, path)
    good = path.read_bytes()

    class Boom(dict):
        def __reduce_ex__(self, protocol):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Boom()}, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_runs_started_together_get_their_own_directories(tmp_path, corpus):
    """Two real processes (forked from this worker), started in the same second."""
    args = ["data=text", f"data.path={corpus}", *TINY_RUN, "trainer.max_steps=2"]
    procs = [fork_cli(args, cwd=tmp_path, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)


def test_run_records_its_provenance(workspace):
    run = workspace["run"]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["seed"] == 1234
    assert record["corpus"]["sha256"] == hashlib.sha256(TINY_TEXT.encode()).hexdigest()
    assert record["corpus"]["chars"] == len(TINY_TEXT) and record["vocab"] == "".join(sorted(set(TINY_TEXT)))
    assert {"python", "torch", "lightning", "hydra-core", "numpy"} <= set(record["versions"])
    assert record["device"]["accelerator"] == "cpu" and record["wall_seconds"] > 0
    assert record["started"] <= record["ended"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"best_val_bpc", "final", "test", "global_step"} <= set(metrics)


def test_resuming_a_gpu_run_on_a_cpu_machine_is_one_sentence(workspace, tmp_path):
    """The device check reads the final (resumed) config, not the freshly composed one."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = copy_run(workspace["run"], tmp_path / "gpu_run")
    config = (run / ".hydra" / "config.yaml").read_text()
    (run / ".hydra" / "config.yaml").write_text(config.replace("accelerator: cpu", "accelerator: gpu"))
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": "running"}))
    before = snapshot(run)
    proc = cli_in_process([f"resume={run}"], cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("charrnn-train: error: ") and "GPU" in lines[0] and "trainer=cpu" in lines[0]
    assert {k: v for k, v in snapshot(run).items() if not k.startswith(".hydra/resume-")} == before
