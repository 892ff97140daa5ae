"""charrnn-sample and charrnn-eval on runs trained here, plus the generator's maths.

Two runs: the session's tiny run of conftest (still uncertain after 20 steps, so sampling has
entropy) and a periodic text a small LSTM learns exactly, trained once for the module. The console
scripts' entry points are called in this process (each process would spend seconds importing torch);
a few refusals go through real processes, which prove the one-line plumbing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from charrnn.cli.rundir import load_run
from charrnn.core.generate import Stepper, generate, pick
from charrnn.core.model import CharRNN
from conftest import TINY_TEXT, cli_in_process, copy_run, only_run_dir, run_cli, write_corpus

PERIODIC_TEXT = "hello world\n" * 200
PERIODIC_RUN = [
    "model.hidden_size=32",
    "data.seq_len=24",
    "data.batch_size=8",
    "optim.lr=1e-2",
    "scheduler=constant",  # pinned: the test needs this much learning, whatever the defaults become
    "trainer.max_steps=150",
    "trainer.val_check_interval=150",
    "trainer.log_every_n_steps=50",
    "trainer.enable_progress_bar=false",
    "sample.length=20",
]


def run_many(*calls: tuple[str, list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Several ``(script, args)`` console script calls, in this process; results in the order given."""
    return [cli_in_process(args, cwd, script) for script, args in calls]


def assert_one_line_error(proc: subprocess.CompletedProcess, script: str, *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def greedy(model: CharRNN, vocab, prompt: str, length: int) -> str:
    """Argmax decoding through the model's own forward (nn.LSTM), independent of the Stepper."""
    out = []
    with torch.no_grad():
        logits, state = model(vocab.encode(prompt).unsqueeze(0))
        for _ in range(length):
            idx = int(logits[0, -1].argmax())
            out.append(vocab.chars[idx])
            logits, state = model(torch.tensor([[idx]]), state)
    return "".join(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, finished_run, finished_corpus) -> dict[str, Path]:
    """``{"tiny": run dir, "periodic": run dir, "periodic_text": file, "root": a dir, "tiny_text": file}``."""
    root = tmp_path_factory.mktemp("sample_eval")
    (root / "periodic").mkdir()
    (root / "periodic.txt").write_text(PERIODIC_TEXT, encoding="utf-8")
    proc = cli_in_process(
        ["data=text", f"data.path={root / 'periodic.txt'}", *PERIODIC_RUN], root / "periodic"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "root": root,  # not the dir the tiny run trained in: its relative data.path is found all the same
        "tiny": finished_run,
        "tiny_text": finished_corpus,
        "periodic": only_run_dir(root / "periodic"),
        "periodic_text": root / "periodic.txt",
    }


# --- in-process: the generator's maths -------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("input", ["onehot", "embedding"])
def test_stepper_matches_the_full_forward(cell, num_layers, input):
    """Step-by-step logits equal ``model(x)``'s: the O(1)-per-character generator computes the same model."""
    torch.manual_seed(0)
    model = CharRNN(
        11, 24, num_layers=num_layers, cell=cell, input=input, embed_dim=7 if input == "embedding" else None
    ).eval()
    x = torch.randint(0, 11, (3, 20))
    with torch.no_grad():
        expected, _ = model(x)
        step, state, got = Stepper(model), model.init_hidden(3), []
        for t in range(x.size(1)):
            logits, state = step(x[:, t], state)
            got.append(logits)
    torch.testing.assert_close(torch.stack(got, dim=1), expected)


def test_top_k_sampling_only_picks_among_the_k_most_likely():
    torch.manual_seed(0)
    model = CharRNN(20, 32, cell="lstm").eval()
    generator = torch.Generator().manual_seed(0)
    step, state = Stepper(model), model.init_hidden(64)
    idx = torch.randint(0, 20, (64,))
    not_argmax = 0
    with torch.no_grad():
        for _ in range(30):
            logits, state = step(idx, state)
            idx = pick(logits, 1.0, 2, generator)
            top2 = logits.topk(2, dim=-1).indices
            assert (idx.unsqueeze(-1) == top2).any(-1).all()
            not_argmax += int((idx != top2[:, 0]).sum())
    assert not_argmax > 0  # it samples, not just takes the argmax


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 500), (3, 7), (8, 16)])
def test_evaluate_scores_every_target_once(batch_size, seq_len):
    from charrnn.core.scoring import evaluate

    torch.manual_seed(0)
    model = CharRNN(6, 12, cell="lstm").eval()
    tokens = torch.randint(0, 6, (301,))
    metrics = evaluate(model, tokens, batch_size, seq_len)
    assert metrics["chars"] == 300
    if batch_size == 1:  # one stream: exactly the full forward over the sequence
        with torch.no_grad():
            logits, _ = model(tokens[:-1].unsqueeze(0))
        loss = torch.nn.functional.cross_entropy(logits[0], tokens[1:]).item()
        assert metrics["loss"] == pytest.approx(loss, rel=1e-6)
        assert metrics["bpc"] == pytest.approx(loss / 0.6931471805599453, rel=1e-6)


# --- charrnn-sample ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sample_is_deterministic_for_a_seed_and_matches_the_library(runs):
    first, second = run_many(
        ("charrnn-sample", [str(runs["tiny"]), "prompt=the", "length=200", "seed=7"]),
        ("charrnn-sample", [str(runs["tiny"]), "prompt=the", "length=200", "seed=7"]),
        cwd=runs["root"],
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout
    assert first.stdout.startswith("the") and len(first.stdout) == len("the") + 200 + 1
    loaded = load_run(runs["tiny"])
    same = "".join(generate(loaded.model, loaded.vocab, "the", 200, 0.8, seed=7))
    other = "".join(generate(loaded.model, loaded.vocab, "the", 200, 0.8, seed=8))
    assert first.stdout == "the" + same + "\n"
    assert other != same


@pytest.mark.slow
def test_near_zero_temperature_and_top_k_1_are_greedy(runs):
    cold, top1 = run_many(
        ("charrnn-sample", [str(runs["tiny"]), "prompt=the ", "length=120", "temperature=1e-4", "seed=1"]),
        (
            "charrnn-sample",
            [str(runs["tiny"]), "prompt=the ", "length=120", "top_k=1", "temperature=1.0", "seed=2"],
        ),
        cwd=runs["root"],
    )
    loaded = load_run(runs["tiny"])
    expected = "the " + greedy(loaded.model, loaded.vocab, "the ", 120) + "\n"
    assert cold.stdout == expected, cold.stderr[-2000:]
    assert top1.stdout == expected, top1.stderr[-2000:]


@pytest.mark.slow
def test_a_periodic_corpus_is_reproduced_and_scored_near_zero(runs):
    sampled, scored = run_many(
        ("charrnn-sample", [str(runs["periodic"]), "prompt=h", "length=71", "top_k=1"]),
        ("charrnn-eval", [str(runs["periodic"]), f"path={runs['periodic_text']}", "batch_size=1", "--json"]),
        cwd=runs["root"],
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sampled.stdout == "hello world\n" * 6 + "\n"  # prompt, 71 characters, a final newline
    assert scored.returncode == 0, scored.stderr[-2000:]
    lines = scored.stdout.strip().splitlines()
    assert len(lines) == 1  # --json: the JSON line only
    record = json.loads(lines[0])
    assert record["chars"] == len(PERIODIC_TEXT) - 1 and record["acc"] > 0.99 and record["bpc"] < 0.1


# --- charrnn-eval -----------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_on_the_val_split_reproduces_the_logged_best_val_bpc(runs):
    # From another directory than training's: the config's relative data.path is found all the same.
    (proc,) = run_many(("charrnn-eval", [str(runs["tiny"]), "split=val"]), cwd=runs["root"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    *table, last = proc.stdout.strip().splitlines()
    assert any(line.startswith("bpc") for line in table) and any(
        line.startswith("perplexity") for line in table
    )
    record = json.loads(last)
    assert {"loss", "bpc", "perplexity", "acc", "chars"} <= set(record)
    best = json.loads((runs["tiny"] / "metrics.json").read_text())["best_val_bpc"]
    assert record["bpc"] == pytest.approx(best, abs=1e-6)
    assert record["perplexity"] == pytest.approx(2 ** record["bpc"], rel=1e-9)
    assert record["loss"] == pytest.approx(record["bpc"] * 0.6931471805599453, rel=1e-12)


# --- bad input: exit 2, one sentence on stderr, no traceback -------------------------------------


# Refused while argv is parsed, before torch is imported: these go through a real process (a tenth of a
# second each), proving the plumbing; the others call the same entry point in this process.
REAL_PROCESS = {("charrnn-sample", "lenght=5"), ("charrnn-eval", "split=dev")}


@pytest.mark.parametrize(
    ("script", "args", "needles"),
    [
        ("charrnn-sample", ["RUN", "length=0"], ["length"]),
        ("charrnn-sample", ["RUN", "temperature=0"], ["temperature"]),
        ("charrnn-sample", ["RUN", "temperature=-1"], ["temperature"]),
        ("charrnn-sample", ["RUN", "top_k=0"], ["top_k"]),
        ("charrnn-sample", ["RUN", "length=ten"], ["length", "integer", "'ten'"]),
        ("charrnn-sample", ["RUN", "temperature=hot"], ["temperature", "number"]),
        ("charrnn-sample", ["RUN", "lenght=5"], ["unknown key", "'lenght'"]),
        ("charrnn-sample", ["RUN", "prompt="], ["prompt"]),
        ("charrnn-sample", ["nowhere/run"], ["does not exist"]),
        ("charrnn-sample", [], ["missing"]),
        ("charrnn-eval", ["RUN", "split=dev"], ["split"]),
        ("charrnn-eval", ["RUN", "batch_size=x"], ["batch_size", "integer"]),
        ("charrnn-eval", ["RUN", "seq_len=0"], ["seq_len"]),
        ("charrnn-eval", ["RUN", "split=val", "path=a.txt"], ["either"]),
        ("charrnn-eval", ["RUN", "bogus=1"], ["unknown key"]),
    ],
)
def test_bad_arguments_fail_with_one_line(tmp_path, script, args, needles):
    (tmp_path / "RUN").mkdir()  # these are refused before any checkpoint is opened
    call = run_cli if (script, args[-1] if args else "") in REAL_PROCESS else cli_in_process
    assert_one_line_error(call(args, tmp_path, script=script), script, *needles)


@pytest.mark.slow
def test_unknown_characters_in_a_prompt_or_a_file_are_named(runs, tmp_path):
    strange = tmp_path / "strange.txt"
    strange.write_text("the cat sat on the mat QZ\u00e9.\n", encoding="utf-8")
    prompt, scored = run_many(
        ("charrnn-sample", [str(runs["tiny"]), "prompt=the Qat\u00e9"]),
        ("charrnn-eval", [str(runs["tiny"]), f"path={strange}"]),
        cwd=tmp_path,
    )
    assert_one_line_error(prompt, "charrnn-sample", "'Q'", "'\u00e9'")
    assert_one_line_error(scored, "charrnn-eval", "3 character(s)", "'Q'", "'Z'", "'\u00e9'")


def call_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """The console entry point in this process (the same code path, without a second torch import)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_bad_and_bare_checkpoints(runs, tmp_path, capsys):
    from charrnn.cli.eval import main as eval_main
    from charrnn.cli.sample import main as sample_main

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {}, "payload": subprocess.CompletedProcess(["x"], 0)}, unsafe
    )
    bare = tmp_path / "bare.ckpt"  # a checkpoint outside its run directory: no config, so no splits
    shutil.copy(load_run(runs["tiny"]).checkpoint_path, bare)

    for main, argv, prog, needle in [
        (sample_main, [str(corrupt)], "charrnn-sample", "corrupt.ckpt"),
        (sample_main, [str(unsafe)], "charrnn-sample", "refusing"),
        (eval_main, [str(corrupt)], "charrnn-eval", "corrupt.ckpt"),
        (eval_main, [str(bare), "split=val"], "charrnn-eval", "path=FILE"),
    ]:
        code, out, err = call_main(main, argv, capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (argv, err)
        assert err.startswith(f"{prog}: error: ") and needle in err, err
    # ...while the bare checkpoint still scores a file.
    code, out, err = call_main(eval_main, [str(bare), f"path={runs['tiny_text']}", "--json"], capsys)
    assert code == 0 and json.loads(out)["chars"] == len(TINY_TEXT) - 1, err


def test_help_prints_usage(tmp_path):
    """Real processes: --help imports neither torch nor Lightning, so each takes a tenth of a second."""
    sample_help = run_cli(["--help"], tmp_path, script="charrnn-sample")
    eval_help = run_cli(["--help"], tmp_path, script="charrnn-eval")
    assert (
        sample_help.returncode == 0
        and "usage: charrnn-sample" in sample_help.stdout
        and "top_k" in sample_help.stdout
    )
    assert (
        eval_help.returncode == 0
        and "usage: charrnn-eval" in eval_help.stdout
        and "split=" in eval_help.stdout
    )


@pytest.mark.slow
def test_eval_of_a_split_of_a_changed_corpus_needs_consent(runs, tmp_path, monkeypatch, capsys):
    """The run's corpus changed since it trained (its lines shuffled): split=val says so and refuses (exit 2)
    unless allow_corpus_change=true; path= scores any text as it is."""
    from charrnn.cli.eval import main

    run = copy_run(runs["tiny"], tmp_path / "run")

    def evaluate(*args):
        try:
            code = main([str(run), *args, "--json"])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    lines = TINY_TEXT.splitlines(keepends=True)
    changed = "".join(lines[1::2] + lines[::2])  # the same characters, another text
    # The run names its corpus relative (data.path=tiny.txt), found first in the current dir: the changed one.
    (tmp_path / "tiny.txt").write_text(changed, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = evaluate("split=val")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert (
        err.startswith("charrnn-eval: error: the run's corpus changed since it trained")
        and "allow_corpus_change=true" in err
    )
    code, out, err = evaluate("split=val", "allow_corpus_change=true")
    assert code == 0, err
    best = json.loads((run / "metrics.json").read_text())["best_val_bpc"]
    assert json.loads(out)["bpc"] != pytest.approx(best, abs=1e-6)  # another text, another score
    write_corpus(tmp_path)  # the text it trained on: the same split scores its logged best again
    code, out, err = evaluate("split=val")
    assert code == 0 and json.loads(out)["bpc"] == pytest.approx(best, abs=1e-6), err
    other = tmp_path / "other.txt"
    other.write_text(changed, encoding="utf-8")
    code, out, err = evaluate(f"path={other}")
    assert code == 0 and json.loads(out)["source"] == str(other), err
    code, out, err = evaluate("allow_corpus_change=maybe")
    assert code == 2 and "allow_corpus_change must be true or false" in err
