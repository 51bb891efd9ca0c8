#!/bin/sh
# Runs every test suite and ends with one summary line over all of them.
# Unit and C integration tests are check runners (their own summaries show
# above); Python integration tests run under Debian's pytest.
set -u
BUILD=${BUILD:-build}
PY=${PY:-/usr/bin/python3}
export RIFFQ_BIN="$(pwd)/$BUILD/riffq"
# the importable module (make python), for the tests of Python programs
export RIFFQ_PYTHONPATH="$(pwd)/$BUILD/python"
passed=0
failed=0
failed_names=""

# check prints "100%: Checks: 12, Failures: 0, Errors: 0"
count_check() {
    line=$(grep -E '^[0-9]+%: Checks: ' "$1" | tail -n 1)
    total=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
    fails=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
    errs=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
    [ -n "$total" ] || { total=1; fails=1; errs=0; }
    passed=$((passed + total - fails - errs))
    failed=$((failed + fails + errs))
}

for t in "$BUILD"/tests/test_* "$BUILD"/tests/itest_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    out=$(mktemp)
    timeout 600 "$t" >"$out" 2>&1
    rc=$?
    cat "$out"
    count_check "$out"
    if [ $rc -ne 0 ]; then
        failed_names="$failed_names $name"
        # a crash or timeout with no summary still counts as a failure
        grep -qE '^[0-9]+%: Checks: ' "$out" || failed=$((failed + 1))
    fi
    rm -f "$out"
done

echo "== python integration tests"
out=$(mktemp)
timeout 900 "$PY" -m pytest -q -p no:cacheprovider tests/integration 2>&1 | tee "$out"
line=$(grep -E '(passed|failed|error)' "$out" | tail -n 1)
p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
f=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || true)
e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+' || true)
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0} + ${e:-0}))
[ -n "$line" ] || { failed=$((failed + 1)); failed_names="$failed_names pytest"; }
rm -f "$out"

[ -n "$failed_names" ] && echo "failing suites:$failed_names"
echo "total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
