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


def test_a_stopped_attempts_file_from_the_same_second_is_purged_too(tmp_path):
    """TensorBoard reads event files in name order (``...tfevents.<seconds>.<host>.<pid>.<n>``) and a purge
    hides only what it read before it: a stopped attempt's last file, made in the second the resume
    starts by a pid that sorts after the resume's, must not show its steps past the checkpoint."""
    import socket
    import time

    from torch.utils.tensorboard import SummaryWriter

    corpus = write_corpus(tmp_path)
    job = tmp_path / "job"
    train_in_process(["data=text", f"data.path={corpus}", *TINY_RUN, "trainer.max_steps=10"], job)
    late = tmp_path / "late"
    with SummaryWriter(str(late)) as writer:  # what the stopped attempt logged after its checkpoint
        writer.add_scalar("train/loss", 123.0, 14)
    (written,) = late.glob("events.out.tfevents.*")
    # Stamped a second ahead, as the resume's own file will be when it starts within that second.
    name = f"events.out.tfevents.{int(time.time()) + 1}.{socket.gethostname()}.99999999.9"
    shutil.move(written, job / "tensorboard" / name)
    train_in_process([f"resume={job}", "trainer.max_steps=20"], job)
    losses = tensorboard_history(job)["train/loss"]
    assert 123.0 not in [value for _, value in losses], losses
    assert len({step for step, _ in losses}) == len(losses), losses  # every step once
