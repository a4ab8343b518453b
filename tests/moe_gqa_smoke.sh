#!/bin/sh
# Smoke test of examples/moe_gqa for `make check` (CPU, ~15 s): --help, clear
# errors (exit 2) for bad flags, then a short run (300 steps) that must pass
# its gradient check, reach 75% held-out accuracy (the domain-blind ceiling is
# ~43%), route each domain's tokens to one expert (mean share >= 90%), print the
# loads, keep memory flat, and exit 0. Run from the build directory.
prog=${MOE_GQA:-./examples/moe_gqa}
tmp=${TMPDIR:-/tmp}/moe_gqa_smoke.$$
trap 'rm -f "$tmp"' EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp" ] && sed 's/^/  | /' "$tmp"; exit 1; }

[ -x "$prog" ] || fail "$prog not built"
"$prog" --help > "$tmp" 2>&1 || fail "--help exited $?"
grep -q -- '--memory-slots' "$tmp" || fail "--help does not list --memory-slots"

# bad flags: exit 2 and a message naming the problem
bad() { # expected-text args...
    want=$1; shift
    "$prog" "$@" > "$tmp" 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "'$*' exited $rc, expected 2"
    grep -q -- "$want" "$tmp" || fail "'$*': message lacks '$want'"
    echo "ok: '$*' -> $(head -1 "$tmp")"
}
bad "(1 or 2)" --top-k 3
bad "cpu or cuda" --device tpu
bad "not an integer" --steps abc
bad "not an integer >= 2" --experts 1
bad "multiple of --q-heads" --dim 50
bad "multiple of --kv-heads" --q-heads 12 --kv-heads 5
bad "not a number >= 0" --capacity -1
bad "not a number in \[0, 1\]" --min-accuracy 1.5
bad "unknown option" --bogus
bad "needs a value" --seed
bad "unexpected argument" extra

"$prog" --steps 300 --eval-interval 100 --min-accuracy 0.75 > "$tmp" 2>&1
rc=$?
cat "$tmp"
[ "$rc" -eq 0 ] || fail "the 300-step run exited $rc"
grep -Eq '^gradient check: flash vs math max err [0-9.e+-]+, finite differences max err [0-9.e+-]+: PASS$' "$tmp" ||
    fail "no gradient check PASS line"
grep -Eq '^step +300 +train loss [0-9.]+ \(aux [0-9.]+\) +eval loss [0-9.]+ +acc +[0-9.]+%' "$tmp" ||
    fail "no report for step 300"
grep -Eq '^ +load \(train, last 100 steps\): e0 [0-9]+ \([0-9.]+%\) e1 ' "$tmp" || fail "no expert load line"
share=$(grep 'routing (eval' "$tmp" | tail -1 | sed -n 's/.*; mean \([0-9.]*\)%.*/\1/p')
[ -n "$share" ] || fail "no routing line"
awk -v s="$share" 'BEGIN { exit !(s >= 90) }' || fail "routing not concentrated: mean share $share%"
grep -Eq '^memory: .*: flat$' "$tmp" || fail "memory not flat"
grep -Eq '^final eval accuracy [0-9.]+% \(threshold 75%, domain-blind ceiling [0-9.]+%\): PASS$' "$tmp" ||
    fail "no final PASS line"
echo "PASS: moe_gqa smoke test (routing mean share $share%)"
