"""hydra/launcher=slurm refuses nonsense numbers itself, in one sentence naming the key, before anything is
submitted (no SLURM needed: the check comes before sinfo and sbatch)."""

from __future__ import annotations

import pytest

from charrnn.cli.slurm import LEAST, check_numbers
from charrnn.core.errors import UserError
from conftest import TINY_RUN, cli_in_process


@pytest.mark.parametrize("key", sorted(LEAST))
def test_each_numeric_key_below_its_least_is_refused_by_name(key):
    least = LEAST[key][0]
    for bad in (least - 1, -1, "4", 2.5, True):
        with pytest.raises(UserError, match=rf"^hydra\.launcher\.{key}={bad} is not a number of "):
            check_numbers({"timeout_min": 60, key: bad})
    check_numbers({key: least})  # the least itself is fine
    check_numbers({key: None})  # null leaves it to SLURM / submitit


@pytest.mark.slow
@pytest.mark.parametrize(
    "override", ["hydra.launcher.mem_gb=-1", "hydra.launcher.cpus_per_task=0", "hydra.launcher.timeout_min=0"]
)
def test_a_nonsense_number_is_one_sentence_and_exit_2_before_submitting(tmp_path, corpus, override):
    sweep = tmp_path / "sweep"
    proc = cli_in_process(
        [
            "-m",
            "hydra/launcher=slurm",
            f"hydra.sweep.dir={sweep}",
            "data=text",
            f"data.path={corpus}",
            *TINY_RUN,
            "optim.lr=1e-3,3e-3",
            override,
        ],
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"charrnn-train: error: {override} is not a number of "), (
        proc.stderr[-2000:]
    )
    assert not (sweep / ".submitit").exists()  # nothing was submitted
