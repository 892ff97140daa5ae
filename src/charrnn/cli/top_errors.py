"""What reaches the top of ``charrnn-train`` (Hydra, a launcher, a failed sweep job), as one line on stderr
and an exit code: 2 for what the user can fix (a misspelt key, an unwritable place, a request no node can
hold), 1 for a failed sweep job or a SLURM job that ended without a result. Anything else stays a traceback:
it is ours to fix."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException

from charrnn.cli.commands import PROG
from charrnn.cli.hydra_lines import hydra_error_line
from charrnn.cli.jobs import JobFailed
from charrnn.core.errors import UserError
from charrnn.core.files import storage_error

SPELLING = "check the spelling against `charrnn-train --help`, which lists every group and key"
# Hydra makes the run dir before the job starts; a new run can go elsewhere.
NEW_DIR = "set hydra.run.dir=DIR (or hydra.sweep.dir=DIR under -m) to a writable place"
# Hydra opens the job's log file before our code runs; resume= reopens the run's own dir.
LOG_DIR = (
    "make its directory writable (resume= continues in the run's own dir; a new run can go elsewhere "
    "with hydra.run.dir=DIR)"
)


def fail(line: str, code: int) -> None:
    print(line, file=sys.stderr)
    raise SystemExit(code) from None


def run_reported(main: Callable[[], object]) -> None:
    """``main()`` (Hydra's), with each error that Hydra or a launcher raises as one line and its exit code;
    with ``CHARRNN_FULL_ERROR=1`` (the user's ``HYDRA_FULL_ERROR=1``) every traceback as it is."""
    if os.environ.get("CHARRNN_FULL_ERROR") == "1":
        main()
        return
    try:
        main()
    except JobFailed as e:
        if not e.shown:  # the job printed it where the user does not look (submitit's log)
            fail(str(e) if str(e).startswith(f"{PROG}:") else f"{PROG}: {e}", 1)
        raise SystemExit(1) from None
    except HydraException as e:
        fail(f"{PROG}: error: {hydra_error_line(e)}; {SPELLING}", 2)
    except OSError as e:  # the run dir, made by Hydra
        if (storage := storage_error(e, fix=NEW_DIR, creating=True)) is None:
            raise
        fail(f"{PROG}: error: {storage}", 2)
    except UserError as e:  # a launcher's refusal before it submits (slurm: a request no node can hold)
        fail(f"{PROG}: error: {e}", 2)
    except ValueError as e:  # logging's "Unable to configure handler 'file'", caused by the OSError
        cause = e.__cause__
        if (storage := storage_error(cause, fix=LOG_DIR) if isinstance(cause, OSError) else None) is None:
            raise
        fail(f"{PROG}: error: {storage}", 2)
    except Exception as e:  # submitit, here: a job that ended without a result (scancel), sbatch refusing
        if not type(e).__module__.startswith("submitit."):
            raise
        from charrnn.cli.slurm import launch_failure_line

        if (line := launch_failure_line(e)) is None:
            raise
        fail(f"{PROG}: {line}", 1)
