#!/usr/bin/env bash
# Load test on loopback: the simulated upstream, a gateway (benchmarks/load/gateway.yaml) and
# locust headless for a bounded time. Writes locust's CSV and HTML report to benchmarks/results/raw/
# and the figures to benchmarks/results/load.json.
#   benchmarks/run_load.sh [USERS=40] [DURATION=60s] [DATA_DIR=../shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-40}
DURATION=${2:-60s}
DATA=${3:-../shared/data}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run 'make install-dev' first" >&2; exit 1; }
[ -f "$DATA/banking77/train.csv" ] || { echo "no $DATA/banking77/train.csv: pass the data folder" >&2; exit 1; }
mkdir -p benchmarks/results/raw
out=benchmarks/results/raw/load-$(date -u +%Y%m%d-%H%M%S)
model=benchmarks/results/triage.joblib
# (re)train when there is no model, or one this version cannot load (another format or scikit-learn)
if ! "$PY" -c "import sys; from tiers.classifier.model import ClassifierModel; ClassifierModel.load(sys.argv[1])" "$model" 2>/dev/null; then
  "$PY" -m gateway.cli train --data "$DATA/banking77/train.csv" --out "$model" --target-precision 0.98
fi
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export SIM_PORT=$(free_port) TIERGATE_PORT=$(free_port) TRIAGE_MODEL=$model
"$PY" -m gateway.cli simulate-upstream --port "$SIM_PORT" --latency-ms 20 --per-token-ms 0.5 2>/dev/null &
sim=$!
"$PY" -m gateway.cli serve --config benchmarks/load/gateway.yaml 2>"$out-gateway.log" &
gw=$!
trap 'kill $sim $gw 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$TIERGATE_PORT/healthz" >/dev/null && break
  sleep 0.2
done
TIERGATE_LOAD_DATA="$DATA/banking77/test.csv" TIERGATE_LOAD_SUMMARY="$out-tiers.json" \
  .venv/bin/locust -f benchmarks/locustfile.py --headless -u "$USERS" -r 10 -t "$DURATION" \
  --host "http://127.0.0.1:$TIERGATE_PORT" --csv "$out" --html "$out.html" --only-summary
rss=$(ps -o rss= -p "$(pgrep -f "gateway.cli serve --config benchmarks/load" | head -1)" | tr -d ' ')
(cd benchmarks && "../$PY" load_summary.py "../$out" "$USERS" "$DURATION" "$rss")
