"""Issue 16 item 2: each rule in one place, and what shows that the places agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from charrnn.core.model import CharRNN
from charrnn.core.vocab import Vocabulary
from conftest import TINY_TEXT

SRC = Path(__file__).resolve().parents[1] / "src" / "charrnn"


def fake_run(tmp_path: Path, data: dict, text: str) -> Path:
    """A run dir as far as charrnn-eval reads one: a checkpoint and the saved config."""
    vocab = Vocabulary.from_text(text)
    model = CharRNN(len(vocab), 8)
    (tmp_path / "checkpoints").mkdir(parents=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model": model.config(), "vocab": "".join(vocab.chars)},
        },
        tmp_path / "checkpoints" / "last.ckpt",
    )
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save({"data": data}, tmp_path / ".hydra" / "config.yaml")
    return tmp_path


@pytest.mark.parametrize(
    "data",
    [
        {"corpus": "text", "seq_len": 16, "batch_size": 4, "split": [0.8, 0.1, 0.1]},
        {"corpus": "text", "seq_len": 8, "batch_size": 2, "batching": "random", "split": [0.9, 0.1, 0.0]},
        {"corpus": "hello", "seq_len": 4, "batch_size": 1, "split": [1.0, 0.0, 0.0]},
    ],
)
def test_eval_rebuilds_the_splits_the_data_module_trains_on(tmp_path, data):
    from charrnn.cli.eval import run_splits
    from charrnn.cli.rundir import load_run
    from charrnn.lit.datamodule import CharDataModule

    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    data = {**data, "path": None if data["corpus"] == "hello" else str(corpus)}
    dm = CharDataModule(**data)
    dm.setup("fit")
    run = load_run(fake_run(tmp_path / "run", data, dm.text))
    splits, _ = run_splits(run, "val")
    for name in ("train", "val", "test"):
        assert torch.equal(splits[name], dm.splits[name]), name


def test_eval_checks_its_window_arguments_once(tmp_path, monkeypatch, capsys):
    import charrnn.core.windows as windows
    from charrnn.cli.eval import main

    calls = []
    check = windows.check_windows
    monkeypatch.setattr(windows, "check_windows", lambda *a, **k: calls.append(a) or check(*a, **k))
    data = {"corpus": "text", "path": None, "seq_len": 16, "batch_size": 4, "split": [0.8, 0.1, 0.1]}
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    run = fake_run(tmp_path / "run", {**data, "path": str(corpus)}, TINY_TEXT)
    assert main([str(run), "split=val", "batch_size=3", "--json"]) == 0
    assert len(calls) == 1
    assert '"standard_val_bpc"' in capsys.readouterr().out


def calls_named(name: str) -> dict[str, int]:
    """Calls of any function or method named ``name`` in the package's modules, by file."""
    found: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    key = str(path.relative_to(SRC))
                    found[key] = found.get(key, 0) + 1
    return found


def test_only_the_model_one_hot_encodes():
    """The numpy reference writes its own maths out on purpose; in torch only the model one-hot encodes."""
    assert calls_named("one_hot") == {"core/model.py": 1, "core/reference.py": 2}


def test_eval_scores_the_hello_run_without_a_standard_val(tmp_path, capsys):
    """The "hello" run has no standard val (its last 10 % is one character): the split is scored alone."""
    from charrnn.cli.eval import main

    data = {"corpus": "hello", "path": None, "seq_len": 4, "batch_size": 1, "split": [1.0, 0.0, 0.0]}
    assert main([str(fake_run(tmp_path, data, "hello")), "split=val"]) == 0
    out = capsys.readouterr().out
    assert "4 characters scored" in out and "standard val" not in out


def test_the_seed_is_checked_in_one_place_with_seed_everythings_bound():
    from charrnn.core.errors import UserError
    from charrnn.lit.datamodule import CharDataModule

    homes = [p for p in SRC.rglob("*.py") if 'checked("seed"' in p.read_text()]
    assert [str(p.relative_to(SRC)) for p in homes] == ["lit/datamodule.py"]
    assert CharDataModule(corpus="hello", seed=2**32 - 1).seed == 2**32 - 1
    for bad in (-1, 2**32, 1.5):
        with pytest.raises(UserError, match=r"^seed "):
            CharDataModule(corpus="hello", seed=bad)


@pytest.mark.parametrize("argv", [["--help"], ["model.hiden_size=3"]])
def test_help_and_a_config_error_answer_without_torch(tmp_path, argv):
    """Issue 16 item 5: the entry layer imports torch and Lightning only once a run starts."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        f"sys.argv = ['charrnn-train', *{argv!r}]\n"
        "from charrnn.cli.train import cli\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
