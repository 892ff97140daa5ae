"""The package's layers (core -> lit -> cli), and the rules that each live in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn.core.errors import UserError
from conftest import TINY_TEXT, write_corpus

SRC = Path(__file__).resolve().parents[1] / "src" / "charrnn"
# What each layer may import, of the project and of the frameworks.
FORBIDDEN = {
    "core": ("charrnn.lit", "charrnn.cli", "lightning", "hydra", "omegaconf"),
    "lit": ("charrnn.cli", "hydra"),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_upward(layer):
    offenders = {}
    for path in sorted((SRC / layer).glob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.startswith(FORBIDDEN[layer]))
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_sample_and_eval_do_not_import_lightning(tmp_path):
    code = (
        "import sys\n"
        "import charrnn.cli.sample, charrnn.cli.eval\n"
        "from charrnn.cli.sample import main\n"
        "main(['--help'])\n"
        "heavy = ('lightning', 'pytorch_lightning', 'hydra')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_split_rule_is_the_same_in_the_data_module_and_in_eval(tmp_path):
    """A zero fraction leaves an empty split: the data module refuses it as the config check did."""
    from charrnn.core.windows import check_split
    from charrnn.lit.datamodule import CharDataModule

    path = write_corpus(tmp_path)
    for split in ([0.9, 0.0, 0.1], [1.0, 0.0, 0.0], [0.9, 0.1, -0.1], [0.5, float("nan"), 0.5]):
        with pytest.raises(UserError, match="data.split") as direct:
            CharDataModule(corpus="text", path=str(path), split=split)
        with pytest.raises(UserError) as shared:
            check_split(split)
        assert str(direct.value) == str(shared.value)
    CharDataModule(corpus="hello", split=[1.0, 0.0, 0.0])  # hello is never cut: its split is not read


def test_sample_temperature_reaches_the_module():
    import torch

    from charrnn.core.generate import generate
    from charrnn.core.model import CharRNN
    from charrnn.core.vocab import Vocabulary
    from charrnn.lit.module import CharRNNModule

    torch.manual_seed(0)
    vocab = Vocabulary.from_text(TINY_TEXT)
    model = CharRNN(len(vocab), 16, cell="lstm")
    samples = {}
    for temperature in (0.05, 3.0):
        module = CharRNNModule(
            model, vocab, optimizer=torch.optim.Adam, sample_length=200, sample_temperature=temperature
        )
        expected = module.sample_prompt + "".join(
            generate(model, vocab, module.sample_prompt, 200, temperature, seed=0)
        )
        assert module.sample_text() == expected
        samples[temperature] = expected
    assert samples[0.05] != samples[3.0]
    with pytest.raises(UserError, match="sample.temperature"):
        CharRNNModule(model, vocab, optimizer=torch.optim.Adam, sample_temperature=0)


def test_the_setattr_fast_path_still_names_a_lightning_attribute():
    """CharRNNModule.__setattr__ skips nn.Module's bookkeeping for Lightning's `_current_fx_name`
    (about 7.7 % of a notebook-sized step, `scripts/bench.py --only overhead`). If Lightning renames
    that attribute the fast path silently stops applying: fail loudly here instead."""
    import torch

    from charrnn.core.model import CharRNN
    from charrnn.core.vocab import Vocabulary
    from charrnn.lit.module import _PLAIN_ATTRIBUTES, CharRNNModule

    vocab = Vocabulary.from_text("helo")
    module = CharRNNModule(CharRNN(len(vocab), 4), vocab, optimizer=torch.optim.Adam)
    assert "_current_fx_name" in vars(module), (
        "Lightning no longer sets _current_fx_name: update _PLAIN_ATTRIBUTES in lit/module.py"
    )
    assert {"_current_fx_name", "_train_state", "_bad_step"} <= _PLAIN_ATTRIBUTES
