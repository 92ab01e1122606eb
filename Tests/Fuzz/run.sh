#!/usr/bin/env bash
# Builds the libFuzzer targets (Tests/Fuzz/fuzz_host.c with one plugin's sources, clang
# -fsanitize=fuzzer,address,undefined) and runs each for SECONDS (default 60) from the seed corpus in
# Tests/Fuzz/corpus/<target>. Prints one line per target: executions, coverage, findings. Exits 1 on
# any finding; the input that caused it is kept in .build/fuzz/findings/<target>/.
#   Tests/Fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(v2_request v2_binary v2_response v2_diff rows_diff tfserving npy image)

# The Swift toolchain's clang carries libFuzzer and the sanitizer runtimes.
cc=${FUZZ_CC:-"$(dirname "$(readlink -f "$(command -v swift)")")/clang"}
out=.build/fuzz
mkdir -p "$out"

status=0
for t in "${targets[@]}"; do
    case $t in
    v2_request | v2_binary | v2_response | v2_diff | rows_diff | tfserving) plugin=json libs="-ljansson -lsimdjson" ;;
    npy) plugin=tensor libs="" ;;
    image) plugin=image libs="-ljansson -ljpeg -lpng16 -lm" ;;
    *) echo "unknown fuzz target $t" >&2; exit 2 ;;
    esac
    bin=$out/fuzz_$t
    macro=FUZZ_$(echo "$t" | tr '[:lower:]' '[:upper:]')
    flags=(-g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -D"$macro" -I include -I Plugins/shared -I "Plugins/$plugin/include")
    objects=()
    # C++ sources of the plugin (the JSON plugin's simdjson decoder), compiled apart as C++17.
    for src in Plugins/$plugin/*.cpp; do
        [ -e "$src" ] || continue
        obj=$out/$t-$(basename "$src" .cpp).o
        "${cc}++" "${flags[@]}" -std=c++17 -c -o "$obj" "$src"
        objects+=("$obj")
    done
    # shellcheck disable=SC2086
    "${cc}++" -fuse-ld=lld "${flags[@]}" "${objects[@]}" -x c -std=c11 Tests/Fuzz/fuzz_host.c Plugins/$plugin/*.c \
        -o "$bin" $libs
    work=$out/corpus/$t findings=$out/findings/$t
    mkdir -p "$work" "$findings"
    log=$out/$t.log
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 \
        -artifact_prefix="$findings/" "$work" "Tests/Fuzz/corpus/$t" >"$log" 2>&1; then
        result="0 findings"
    else
        result="FINDING: $(ls "$findings" | head -1) (see $log)"
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(ls "$work" | wc -l)
    printf '%-12s %10s executions in %ss, coverage %s edges, corpus %s, %s\n' \
        "$t" "${runs:-?}" "$seconds" "${cov:-?}" "$corpus" "$result"
done
exit $status
