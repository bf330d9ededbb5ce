#!/usr/bin/env bash
# Runs the test suite against the installed package (make test). Extra args go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
shift || true
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# Paths among the arguments (test/test_x.py, test/test_x.py::name) choose what runs; without
# any, the whole suite (test/) does.
paths=test
for a in "$@"; do
  case "$a" in -*) ;; *) [ -e "${a%%::*}" ] && paths= ;; esac
done
"$VENV/bin/python" -m pytest $paths "$@"
code=$?
# Killed nodes leave FastDDS shared-memory files behind; remove those nobody holds.
"$VENV/bin/python" -c "from lrm_ros.bringup.runner import clean_stale_shm; n = clean_stale_shm(); print(f'[test] removed {n} stale /dev/shm files') if n else None"
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
