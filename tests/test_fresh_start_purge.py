"""A run that starts from step 0 in a dir holding an earlier attempt's event files (a sweep job killed
before its first checkpoint, started again by ``-m resume=<sweep dir>``) shows one TensorBoard history."""

import shutil

from conftest import TINY_RUN, tensorboard_history, train_in_process, write_corpus


def test_a_fresh_start_over_a_killed_attempts_events_shows_one_history(tmp_path):
    corpus = write_corpus(tmp_path)
    args = ["data=text", f"data.path={corpus}", *TINY_RUN]
    train_in_process(args, tmp_path / "ref")
    job = tmp_path / "job"
    train_in_process(args, job)
    # What a job killed before its first checkpoint leaves: event files, and no checkpoint or record.
    shutil.rmtree(job / "checkpoints")
    for name in ("run.json", "metrics.json"):
        (job / name).unlink(missing_ok=True)
    train_in_process(args, job)
    assert tensorboard_history(job) == tensorboard_history(tmp_path / "ref")
