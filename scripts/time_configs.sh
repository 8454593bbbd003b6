#!/usr/bin/env bash
# Wall and CPU time of each model config's default run (python train.py model=NAME, everything else default),
# for the README's training section. Run it on a quiet machine, one run at a time:
#   bash scripts/time_configs.sh                 # every configs/model/*.yaml
#   bash scripts/time_configs.sh mamba based     # some of them
# Prints a Markdown table (and the machine); each run's folder is kept under $OUT (default time_configs/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-time_configs}
mkdir -p "$OUT"
if [ $# -eq 0 ]; then
  set -- $(ls configs/model/*.yaml | xargs -n1 basename | sed 's/\.yaml$//')
fi
python - <<'PY'
import os, platform, torch
print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at the start")
PY
echo
echo "| model | wall s | CPU s (user+sys) | mean test accuracy |"
echo "|---|---|---|---|"
TIMEFORMAT="%R %U %S"
for model in "$@"; do
  dir="$OUT/$model"
  rm -rf "$dir"
  if ! { time python train.py "model=$model" "hydra.run.dir=$dir" print_test_table=false \
           +trainer.enable_progress_bar=false +trainer.enable_model_summary=false >/dev/null 2>"$OUT/$model.stderr" ; } \
         2> "$OUT/$model.time"; then
    echo "| $model | failed: see $OUT/$model.stderr | | |"
    continue
  fi
  read -r wall user sys < "$OUT/$model.time"
  accuracy=$(python -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['mean_accuracy']:.4f}\")" \
             "$dir/test_accuracy.json")
  cpu=$(python -c "print(f'{$user + $sys:.0f}')")
  echo "| $model | $(printf '%.0f' "$wall") | $cpu | $accuracy |"
done
