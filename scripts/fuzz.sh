#!/usr/bin/env bash
# Run each libFuzzer harness (build-fuzz/fuzz_<target>, `make fuzz-build`)
# for FUZZ_SECONDS from its committed seeds tests/fuzz/<target>/, new inputs
# kept in build-fuzz/corpus/<target>/, crashers in build-fuzz/crash/. Prints
# one line per target (runs, exec/s, corpus, crashes) and exits 1 if any
# crashed, leaked, hung (-timeout per input) or ran out of memory.
# A crasher, once fixed, is committed to tests/fuzz/<target>/ so that
# `make test` (fuzz_replay) replays it from then on.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-180}
JOBS=${FUZZ_JOBS:-1}
TIMEOUT=${FUZZ_TIMEOUT:-10}   # seconds one input may take before it counts as a hang
RSS_MB=${FUZZ_RSS_MB:-2048}   # memory one run may use (libFuzzer -rss_limit_mb)
B=build-fuzz
mkdir -p $B/crash $B/logs
# Mallocs over the memory limit return NULL (an error for the parser)
# rather than end the run. libhdf5 never sees a damaged checkpoint's
# structure (llamac checks its content table first: README "Fuzzing").
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=$RSS_MB:detect_leaks=1:suppressions=tests/fuzz/asan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=tests/fuzz/lsan.supp:print_suppressions=0}
run_one() {
    t=$1
    mkdir -p $B/corpus/$t
    ml=65536
    [ "$t" = ckpt ] && ml=262144 # a checkpoint's 64 KiB content table comes first
    nice $B/fuzz_$t -max_total_time=$SECONDS_EACH -timeout=$TIMEOUT -rss_limit_mb=$RSS_MB \
        -max_len=$ml -print_final_stats=1 -artifact_prefix=$B/crash/$t- \
        $B/corpus/$t tests/fuzz/$t > $B/logs/$t.log 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' $B/logs/$t.log | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' $B/logs/$t.log | tail -1)
    ncorp=$(ls $B/corpus/$t | wc -l)
    ncrash=$(ls $B/crash 2>/dev/null | grep -c "^$t-" || true)
    printf '%-16s %6ss  runs %10s  exec/s %7s  corpus %5s  crashes %s  rc %s\n' \
        "$t" "$SECONDS_EACH" "${runs:-?}" "${eps:-?}" "$ncorp" "$ncrash" "$rc"
    return $rc
}
fail=0
if [ "$JOBS" -le 1 ]; then
    for t in "$@"; do run_one "$t" || fail=1; done
else
    export -f run_one; export B SECONDS_EACH TIMEOUT RSS_MB
    printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'run_one {}' || fail=1
fi
[ $fail -eq 0 ] || echo "fuzz: a harness failed: see $B/logs/<target>.log and $B/crash/" >&2
exit $fail
