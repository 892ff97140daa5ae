import pytest
import torch

from charrnn.core.errors import UserError
from charrnn.core.vocab import Vocabulary
from charrnn.core.windows import IGNORE_INDEX, RandomWindows, StreamWindows, split_bounds
from charrnn.lit.datamodule import CharDataModule


def test_vocabulary_round_trip(tmp_path):
    text = "hello, wörld!\n"
    vocab = Vocabulary.from_text(text)
    assert vocab.chars == sorted(set(text))
    assert vocab.decode(vocab.encode(text)) == text
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


def test_unknown_characters_are_named():
    vocab = Vocabulary.from_text("helo")
    with pytest.raises(UserError, match=r"'x', 'z'"):
        vocab.encode("hexlz")


def test_stream_windows_cover_every_target_once_in_order():
    tokens = torch.arange(103)
    ds = StreamWindows(tokens, streams=4, seq_len=8)
    inputs = torch.cat([ds[k][0] for k in range(len(ds))], dim=1)
    targets = torch.cat([ds[k][1] for k in range(len(ds))], dim=1)
    real = targets != IGNORE_INDEX
    assert int(real.sum()) == len(tokens) - 1
    # Every target is its input shifted by one, and each stream is one contiguous stretch.
    assert torch.equal(targets[real], inputs[real] + 1)
    assert torch.equal(torch.sort(targets[real]).values, tokens[1:])
    for row_in, row_real in zip(inputs, real):
        kept = row_in[row_real]
        assert torch.equal(kept, torch.arange(int(kept[0]), int(kept[0]) + len(kept)))
    # Stream b's window k+1 continues where its window k ended.
    a, b = ds[0][0], ds[1][0]
    assert torch.equal(b[:, 0], a[:, -1] + 1)


def test_random_windows_are_shifted_pairs():
    tokens = torch.arange(50)
    x, y = RandomWindows(tokens, 10)[7]
    assert torch.equal(x, tokens[7:17]) and torch.equal(y, tokens[8:18])


def test_split_bounds_are_disjoint_and_contiguous():
    bounds = split_bounds(1000, [0.9, 0.05, 0.05])
    assert bounds == [(0, 900), (900, 950), (950, 1000)]


def test_datamodule_yields_shifted_batches_of_indices(corpus):
    dm = CharDataModule(corpus="text", path=str(corpus), seq_len=16, batch_size=4)
    dm.setup("fit")
    assert dm.tokens is not None and dm.tokens.dtype == torch.long
    sizes = [len(dm.splits[s]) for s in ("train", "val", "test")]
    assert sum(sizes) == len(dm.tokens) and min(sizes) > 0
    assert torch.equal(torch.cat([dm.splits[s] for s in ("train", "val", "test")]), dm.tokens)
    x, y = next(iter(dm.train_dataloader()))  # indices: the model one-hot encodes them (CharRNN.forward)
    assert x.shape == (4, 16) and x.dtype == torch.long
    assert y.shape == (4, 16)
    # The input of position t+1 is the target of position t.
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_random_batching_datamodule(corpus):
    dm = CharDataModule(corpus="text", path=str(corpus), seq_len=16, batch_size=4, batching="random")
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])


def test_hello_validates_on_its_training_sequence():
    dm = CharDataModule(corpus="hello", seq_len=4, batch_size=1)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert dm.vocab.chars == list("ehlo")
    assert dm.vocab.decode(x[0]) == "hell" and dm.vocab.decode(y[0]) == "ello"
    vx, vy = next(iter(dm.val_dataloader()))
    assert torch.equal(vx, x) and torch.equal(vy, y)


def test_too_short_corpus_is_a_clear_error(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij")
    dm = CharDataModule(corpus="text", path=str(path), seq_len=64)
    with pytest.raises(UserError, match="split"):
        dm.setup("fit")


@pytest.mark.parametrize("accumulate,limit", [(1, None), (2, None), (3, None), (2, 10)])
def test_epoch_sampler_reads_every_epoch_whole_under_gradient_accumulation(accumulate, limit):
    """Lightning's loop, as the sampler sees it: an epoch of ``limit or 49`` batches, one optimizer step
    per ``accumulate`` batches (the epoch's last step takes what is left), set_epoch before each epoch."""
    from charrnn.core.windows import EpochSampler

    step = 0
    sampler = EpochSampler(49, steps=lambda: step, epoch_batches=lambda: limit, accumulate=lambda: accumulate)
    for epoch in range(4):
        sampler.set_epoch(epoch)
        read = list(sampler)[: limit or 49]
        assert sampler.epoch == epoch and read == list(range(limit or 49)), (epoch, read[:3])
        step += -(-len(read) // accumulate)
        assert sampler.position() == {"epoch": epoch, "batches": limit or 49}
