"""charrnn's Hydra plugins are real packages under ``hydra_plugins/``, found by Hydra's own plugin scan in
this install (editable or wheel), as conf/hydra/launcher/slurm.yaml names them."""

from __future__ import annotations

import subprocess
import sys

import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher

from conftest import REPO, cli_in_process

SLURM_LAUNCHER = "hydra_plugins.charrnn_slurm_launcher.slurm_launcher.SubmititSlurmLauncher"


def test_hydra_discovers_the_slurm_launcher_that_slurm_yaml_names():
    found = {f"{c.__module__}.{c.__name__}": c for c in Plugins.instance().discover(Launcher)}
    assert SLURM_LAUNCHER in found, sorted(found)
    from charrnn.cli.slurm import SubmititSlurmLauncher

    assert issubclass(found[SLURM_LAUNCHER], SubmititSlurmLauncher)
    conf = yaml.safe_load((REPO / "conf" / "hydra" / "launcher" / "slurm.yaml").read_text())
    assert (
        conf["launcher"]["_target_"] == SLURM_LAUNCHER and "callbacks" not in conf
    )  # no registering callback


def test_the_plugin_scan_stays_light():
    """Hydra imports every plugin module at every start of any Hydra app in this environment: no torch."""
    code = (
        "import sys; from hydra.core.plugins import Plugins; Plugins.instance(); print('torch' in "
        "sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    assert "Error importing" not in done.stderr


def test_charrnn_train_info_plugins_lists_it(tmp_path):
    proc = cli_in_process(["--info", "plugins"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\t\tSubmititSlurmLauncher" in proc.stdout
