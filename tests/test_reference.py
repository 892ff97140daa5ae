"""The numpy reference RNN (charrnn.core.reference) is the maths; these tests prove CharRNN computes it.

Random draws are fresh on every run; each failure message carries the seed, and setting
CHARRNN_TEST_SEED=<seed> replays exactly that draw.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.core import reference as ref
from charrnn.core.model import CharRNN

REPO = Path(__file__).resolve().parents[1]
SIZES = [  # (vocab, hidden, seq, batch): the notebook's, then odd shapes, batch > 1
    (4, 8, 4, 1),
    (5, 3, 7, 3),
    (11, 16, 12, 4),
    (30, 64, 25, 8),
]


@pytest.fixture
def seed() -> int:
    """A fresh 128-bit seed per test (or CHARRNN_TEST_SEED to replay a failure)."""
    return int(os.environ.get("CHARRNN_TEST_SEED") or np.random.SeedSequence().entropy)


def why(seed: int) -> str:
    return f"seed {seed}; replay with CHARRNN_TEST_SEED={seed}"


def random_params(rng: np.random.Generator, vocab: int, hidden: int, scale: float = 0.5) -> ref.Params:
    """Weights big enough that tanh is nonlinear and the recurrence matters (Whh spectral radius ~1.5)."""
    return {
        "Wxh": rng.standard_normal((hidden, vocab)) * scale,
        "Whh": rng.standard_normal((hidden, hidden)) * 1.5 / np.sqrt(hidden),
        "Why": rng.standard_normal((vocab, hidden)) * scale,
        "bh": rng.standard_normal(hidden) * scale,
        "by": rng.standard_normal(vocab) * scale,
    }


def random_batch(rng: np.random.Generator, vocab: int, hidden: int, seq: int, batch: int):
    x = rng.integers(0, vocab, (batch, seq))
    y = rng.integers(0, vocab, (batch, seq))
    h0 = np.tanh(rng.standard_normal((batch, hidden)))
    return x, y, h0


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the larger array's largest entry (scale-aware, no 0/0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-300))


def torch_run(params: ref.Params, x: np.ndarray, y: np.ndarray, h0: np.ndarray):
    """CharRNN.from_reference forward + autograd on the same mean loss; grads named as the reference's."""
    model = CharRNN.from_reference(params)
    h = torch.tensor(h0[None], dtype=torch.float64, requires_grad=True)  # (layers=1, batch, hidden)
    logits, h_last = model(torch.as_tensor(x), h)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.as_tensor(y).reshape(-1))
    loss.backward()
    rnn = model.rnn
    # bias_ih and bias_hh are added, so both receive d loss / d bh (up to summation order).
    assert rel(rnn.bias_ih_l0.grad.numpy(), rnn.bias_hh_l0.grad.numpy()) < 1e-12
    grads = {
        "Wxh": rnn.weight_ih_l0.grad,
        "Whh": rnn.weight_hh_l0.grad,
        "Why": model.head.weight.grad,
        "bh": rnn.bias_ih_l0.grad,
        "by": model.head.bias.grad,
    }
    return (
        logits.detach().numpy(),
        h_last[0].detach().numpy(),
        loss.item(),
        {k: g.numpy() for k, g in grads.items()},
        h.grad[0].numpy(),
    )


# --- numpy == torch ------------------------------------------------------------------------


@pytest.mark.parametrize("vocab,hidden,seq,batch", SIZES)
def test_forward_matches_torch(seed, vocab, hidden, seq, batch):
    rng = np.random.default_rng(seed)
    params = random_params(rng, vocab, hidden)
    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    fwd = ref.forward(params, x, y, h0)
    logits, h_last, loss, _, _ = torch_run(params, x, y, h0)
    assert fwd.logits.shape == (batch, seq, vocab) and fwd.hs.shape == (batch, seq, hidden)
    assert rel(fwd.logits, logits) < 1e-10, why(seed)
    assert rel(fwd.hs[:, -1], h_last) < 1e-10, why(seed)
    assert abs(fwd.loss - loss) / loss < 1e-10, why(seed)
    # The loss really is the mean natural-log cross-entropy over all batch * seq targets.
    p = fwd.probs[np.arange(batch)[:, None], np.arange(seq), y]
    assert fwd.loss == pytest.approx(-np.log(p).mean(), rel=1e-12), why(seed)


@pytest.mark.parametrize("vocab,hidden,seq,batch", SIZES)
def test_bptt_gradients_match_torch_autograd(seed, vocab, hidden, seq, batch):
    rng = np.random.default_rng(seed)
    params = random_params(rng, vocab, hidden)
    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    grads, dh0 = ref.backward(params, ref.forward(params, x, y, h0))
    _, _, _, torch_grads, torch_dh0 = torch_run(params, x, y, h0)
    for name in ref.PARAM_NAMES:
        assert grads[name].shape == params[name].shape, name
        assert np.abs(grads[name]).max() > 0, f"{name}: all-zero gradient, {why(seed)}"
        assert rel(grads[name], torch_grads[name]) < 1e-8, f"{name}: {why(seed)}"
    assert rel(dh0, torch_dh0) < 1e-8, f"h0: {why(seed)}"


def test_onehot_and_index_inputs_agree(seed):
    rng = np.random.default_rng(seed)
    vocab, hidden, seq, batch = 6, 5, 8, 3
    params = random_params(rng, vocab, hidden)
    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    by_index = ref.forward(params, x, y, h0)
    by_onehot = ref.forward(params, ref.one_hot(x, vocab), y, h0)
    assert rel(by_index.logits, by_onehot.logits) < 1e-14 and by_index.loss == pytest.approx(
        by_onehot.loss, rel=1e-14
    )
    model = CharRNN.from_reference(params)
    logits, _ = model(torch.as_tensor(ref.one_hot(x, vocab)), torch.as_tensor(h0[None]))
    assert rel(by_onehot.logits, logits.detach().numpy()) < 1e-10, why(seed)


def test_loss_and_grads_carries_the_hidden_state(seed):
    """min-char-rnn's lossFun: two chunks with the state carried equal one pass over both."""
    rng = np.random.default_rng(seed)
    vocab, hidden, batch = 5, 7, 2
    params = random_params(rng, vocab, hidden)
    x, y, h0 = random_batch(rng, vocab, hidden, 12, batch)
    whole = ref.forward(params, x, y, h0)
    loss1, grads1, h_mid = ref.loss_and_grads(params, x[:, :5], y[:, :5], h0)
    loss2, _, h_end = ref.loss_and_grads(params, x[:, 5:], y[:, 5:], h_mid)
    assert rel(h_end, whole.hs[:, -1]) < 1e-14 and rel(h_mid, whole.hs[:, 4]) < 1e-14, why(seed)
    assert (5 * loss1 + 7 * loss2) / 12 == pytest.approx(whole.loss, rel=1e-13), why(seed)
    grads, _ = ref.backward(params, ref.forward(params, x[:, :5], y[:, :5], h0))
    assert all(np.array_equal(grads[k], grads1[k]) for k in ref.PARAM_NAMES)


# --- numerical gradient check ----------------------------------------------------------------


@pytest.mark.parametrize("vocab,hidden,seq,batch", [(4, 8, 4, 1), (5, 6, 5, 3)])
def test_bptt_against_central_differences(seed, vocab, hidden, seq, batch):
    """Every entry of every gradient (and of d/d h0) against a numerical derivative of the loss.

    Fourth-order central differences, (8[f(+e) - f(-e)] - [f(+2e) - f(-2e)]) / 12e with e = 1e-3:
    truncation (~e^4) and rounding (~1e-16 / e) errors both stay near 1e-13, so 1e-6 is a strict
    bound. Relative error |a - n| / max(|a| + |n|, 1e-6); the floor only matters for gradients
    that are (near) zero, e.g. Wxh columns of characters absent from the input.
    """
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(v.shape) * 0.5 for k, v in random_params(rng, vocab, hidden).items()}
    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    h0 = rng.standard_normal(h0.shape) * 0.5
    grads, dh0 = ref.backward(params, ref.forward(params, x, y, h0))
    eps, worst = 1e-3, (0.0, "")
    for name, array, analytic in [*((k, params[k], grads[k]) for k in ref.PARAM_NAMES), ("h0", h0, dh0)]:
        for i in np.ndindex(array.shape):

            def loss_at(delta: float, array=array, i=i) -> float:
                old = array[i]
                array[i] = old + delta
                value = ref.forward(params, x, y, h0).loss
                array[i] = old
                return value

            numeric = (8 * (loss_at(eps) - loss_at(-eps)) - (loss_at(2 * eps) - loss_at(-2 * eps))) / (
                12 * eps
            )
            err = abs(analytic[i] - numeric) / max(abs(analytic[i]) + abs(numeric), 1e-6)
            if err > worst[0]:
                worst = (err, f"{name}{list(i)}: analytic {analytic[i]:.6e}, numeric {numeric:.6e}")
    assert worst[0] < 1e-6, f"{worst[1]}; {why(seed)}"


# --- trained weights move both ways ----------------------------------------------------------


def corpus_batches(rng: np.random.Generator, vocab: int, seq: int, batch: int, n: int):
    """Batches from a small corpus with structure to learn: a repeated random word plus noise."""
    word = rng.integers(0, vocab, 7)
    text = np.tile(word, 60)
    noise = rng.random(text.size) < 0.1
    text[noise] = rng.integers(0, vocab, noise.sum())
    for _ in range(n):
        starts = rng.integers(0, text.size - seq - 1, batch)
        yield (
            np.stack([text[s : s + seq] for s in starts]),
            np.stack([text[s + 1 : s + seq + 1] for s in starts]),
        )


def test_numpy_trained_model_gives_same_loss_in_torch(seed):
    rng = np.random.default_rng(seed)
    vocab, hidden, seq, batch = 6, 12, 10, 4
    params = ref.init_params(vocab, hidden, rng)
    start = {k: v.copy() for k, v in params.items()}
    opt = ref.Adagrad(params, lr=0.1)
    losses = []
    for x, y in corpus_batches(rng, vocab, seq, batch, 40):
        fwd = ref.forward(params, x, y)
        losses.append(fwd.loss)
        grads, _ = ref.backward(params, fwd)
        opt.step(params, ref.clip_elementwise(grads, 5.0))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.1, f"numpy training did not learn: {why(seed)}"
    assert max(np.abs(params[k] - start[k]).max() for k in params) > 0.1

    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    fwd = ref.forward(params, x, y, h0)
    logits, _, loss, _, _ = torch_run(params, x, y, h0)
    assert abs(fwd.loss - loss) / loss < 1e-10, why(seed)
    assert rel(fwd.logits, logits) < 1e-10, why(seed)


def test_torch_trained_model_gives_same_loss_in_numpy(seed):
    rng = np.random.default_rng(seed)
    vocab, hidden, seq, batch = 6, 12, 10, 4
    with torch.random.fork_rng():
        torch.manual_seed(seed % 2**63)
        model = CharRNN(vocab, hidden).double()
    start = model.to_reference()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for x, y in corpus_batches(rng, vocab, seq, batch, 20):
        logits, _ = model(torch.as_tensor(x))
        loss = F.cross_entropy(logits.reshape(-1, vocab), torch.as_tensor(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = model.to_reference()
    assert max(np.abs(params[k] - start[k]).max() for k in params) > 0.1
    # Adam moved both torch biases; the reference sees only their sum.
    assert np.abs(model.rnn.bias_hh_l0.detach().numpy()).max() > 0

    x, y, h0 = random_batch(rng, vocab, hidden, seq, batch)
    model.eval()
    with torch.no_grad():
        logits, h_last = model(torch.as_tensor(x), torch.as_tensor(h0[None]))
        loss = F.cross_entropy(logits.reshape(-1, vocab), torch.as_tensor(y).reshape(-1)).item()
    fwd = ref.forward(params, x, y, h0)
    assert abs(fwd.loss - loss) / loss < 1e-10, why(seed)
    assert rel(fwd.logits, logits.numpy()) < 1e-10 and rel(fwd.hs[:, -1], h_last[0].numpy()) < 1e-10, why(
        seed
    )


def test_reference_round_trips_through_charrnn(seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng, 7, 9)
    model = CharRNN.from_reference(params)
    assert model.head.weight.dtype == torch.float64 and model.cell == "rnn" and model.num_layers == 1
    back = model.to_reference()
    assert set(back) == set(ref.PARAM_NAMES)
    for name in ref.PARAM_NAMES:
        assert back[name].dtype == np.float64 and back[name].shape == params[name].shape, name
        assert np.array_equal(back[name], params[name]), f"{name}: {why(seed)}"


# --- pieces of the training loop -------------------------------------------------------------


def test_init_params_follow_min_char_rnn(seed):
    params = ref.init_params(4, 100, np.random.default_rng(seed))
    assert {k: v.shape for k, v in params.items()} == {
        "Wxh": (100, 4),
        "Whh": (100, 100),
        "Why": (4, 100),
        "bh": (100,),
        "by": (4,),
    }
    assert all(v.dtype == np.float64 for v in params.values())
    assert not params["bh"].any() and not params["by"].any()
    assert 0.008 < params["Whh"].std() < 0.012, why(seed)
    probs = ref.forward(params, np.array([[0, 1, 2, 2]])).probs
    assert np.abs(probs - 0.25).max() < 0.02, why(seed)


def test_clipping(seed):
    rng = np.random.default_rng(seed)
    grads = {k: v * 40 for k, v in random_params(rng, 5, 4, scale=1.0).items()}
    clipped = ref.clip_elementwise({k: v.copy() for k, v in grads.items()}, 5.0)
    for k in grads:
        assert np.abs(clipped[k]).max() <= 5.0
        small = np.abs(grads[k]) <= 5.0
        assert np.array_equal(clipped[k][small], grads[k][small])
        assert np.array_equal(clipped[k][~small], 5.0 * np.sign(grads[k][~small]))

    # Global-norm clipping is torch.nn.utils.clip_grad_norm_'s rule.
    tensors = [torch.tensor(grads[k]) for k in ref.PARAM_NAMES]
    for t in tensors:
        t.grad = t.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm=3.0).item()
    ours = {k: v.copy() for k, v in grads.items()}
    norm = ref.clip_global_norm(ours, 3.0)
    assert norm == pytest.approx(torch_norm, rel=1e-12)
    for k, t in zip(ref.PARAM_NAMES, tensors):
        assert rel(ours[k], t.grad.numpy()) < 1e-12, k
    assert ref.clip_global_norm(ours, 1e9) == pytest.approx(3.0, rel=1e-6)  # under the limit: untouched


def test_adagrad_and_sgd_updates(seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng, 5, 4)
    grads = random_params(rng, 5, 4, scale=1.0)
    sgd_params = {k: v.copy() for k, v in params.items()}
    ref.SGD(sgd_params, lr=0.3).step(sgd_params, grads)
    for k in params:
        assert np.allclose(sgd_params[k], params[k] - 0.3 * grads[k], rtol=0, atol=1e-15)
    opt = ref.Adagrad(params, lr=0.1)
    before = {k: v.copy() for k, v in params.items()}
    opt.step(params, grads)
    opt.step(params, grads)  # second step: memory holds 2 g^2
    for k in params:
        g = grads[k]
        assert np.array_equal(opt.memory[k], g * g + g * g)
        expected = before[k] - 0.1 * g / np.sqrt(g * g + 1e-8) - 0.1 * g / np.sqrt(2 * g * g + 1e-8)
        assert np.allclose(params[k], expected, rtol=0, atol=1e-14), k


# --- sampling --------------------------------------------------------------------------------


def test_sampling_is_deterministic_for_a_seed(seed):
    params = random_params(np.random.default_rng(seed), 8, 6)
    a = ref.sample(params, 3, 200, np.random.default_rng(seed), temperature=1.0)
    b = ref.sample(params, 3, 200, np.random.default_rng(seed), temperature=1.0)
    c = ref.sample(params, 3, 200, np.random.default_rng(seed + 1), temperature=1.0)
    assert a == b, why(seed)
    assert a != c, why(seed)  # a different generator draws differently (chance of equality ~1e-100)
    assert len(a) == 200 and all(isinstance(i, int) and 0 <= i < 8 for i in a)


def test_low_temperature_sampling_follows_the_argmax(seed):
    rng = np.random.default_rng(seed)
    vocab, n = 6, 30
    params = ref.init_params(vocab, 10, rng)  # near-uniform: at temperature 1 draws are nearly random
    # The greedy path, worked out independently with forward() on the growing prefix.
    path, gaps = [2], []
    for _ in range(n):
        last = ref.forward(params, np.array([path])).logits[0, -1]
        top2 = np.sort(last)[-2:]
        gaps.append(top2[1] - top2[0])
        path.append(int(last.argmax()))
    greedy = path[1:]
    temperature = min(gaps) / 50  # e^-50: a non-argmax draw is out of the question
    assert ref.sample(params, 2, n, rng, temperature=temperature) == greedy, why(seed)
    assert ref.sample(params, 2, n, rng, temperature=0) == greedy, why(seed)
    assert ref.sample(params, 2, n, rng, temperature=1.0) != greedy, why(seed)  # chance ~(1/6)^30


# --- the script and the import boundary ------------------------------------------------------


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "numpy_rnn.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_numpy_rnn_script_learns_hello():
    proc = run_script()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    before, after = out.split("training with", 1)
    rows = [line for line in before.splitlines() if re.match(r"\s+\d+\s+'", line)]
    assert len(rows) == 4, out
    for row in rows:  # the notebook's near-uniform first predictions
        probs = [float(p) for p in re.findall(r"\d\.\d{3}", row)]
        assert len(probs) == 4 and all(abs(p - 0.25) < 0.01 for p in probs), row
    assert re.search(r"learned after \d+ steps: loss [\d.]+, predicts 'ello'", after), out
    assert re.search(r"step\s+\d+\s+loss [\d.]+", after), out  # the loss was printed while training


def test_numpy_rnn_script_fails_cleanly_when_it_cannot_learn():
    proc = run_script("--steps", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stderr and "'ello'" in proc.stderr


def test_reference_does_not_import_torch():
    code = "import charrnn.core.reference, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
