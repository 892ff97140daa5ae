#!/usr/bin/env bash
# Wall time of a 4-job sweep (the default LSTM-256 on the stdlib corpus, 100 steps each: lr x seed)
# with the basic launcher, the basic launcher on 1 torch thread, and joblib n_jobs=2
# (hydra/launcher=parallel), side by side, plus per-job startup and training time.
#   bash scripts/bench_sweep.sh            (from the repository root, after `make test` or setup)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
train=${CHARRNN_TRAIN:-$root/.venv/bin/charrnn-train}
python=${PYTHON:-$root/.venv/bin/python}
work=$root/outputs/bench_sweep
args="trainer.max_steps=100 trainer.val_check_interval=100 trainer.enable_progress_bar=false optim.lr=1e-3,3e-3 seed=1,2"
run() {  # name, env, launcher
  rm -rf "$work/$1" && mkdir -p "$work/$1"
  date +%s.%N > "$work/$1/start"
  (cd "$work/$1" && env $2 "$train" -m hydra/launcher=$3 $args > out.txt 2> err.txt; echo $? > rc)
  date +%s.%N > "$work/$1/end"
}
run basic "X=1" basic
run parallel "X=1" parallel
run basic_1thread "OMP_NUM_THREADS=1" basic
cd "$work" && "$python" - <<'PY'
import glob, json, os
print(f"{'variant':16s} {'sweep s':>8s} {'to 1st job s':>12s} {'fit s/job':>9s} {'job s/job':>9s} {'job-fit s':>9s}  exit")
base = None
for v in ("basic", "basic_1thread", "parallel"):
    start, end = float(open(f"{v}/start").read()), float(open(f"{v}/end").read())
    jobs = sorted(glob.glob(f"{v}/outputs/multirun/*/*/[0-9]*"))
    m = [json.load(open(f"{j}/metrics.json")) for j in jobs]
    first = min(os.path.getmtime(f"{j}/.hydra/config.yaml") for j in jobs)
    fit = sum(x["fit_seconds"] for x in m) / len(m)
    wall = sum(x["wall_seconds"] for x in m) / len(m)
    base = base or end - start
    print(f"{v:16s} {end-start:8.1f} {first-start:12.1f} {fit:9.1f} {wall:9.1f} {wall-fit:9.1f}  {open(v + '/rc').read().strip()}   x{base / (end - start):.2f} vs basic")
PY
