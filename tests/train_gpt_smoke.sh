#!/bin/sh
# examples/train_gpt end to end on the CPU (make check; about 20 s):
#   - bad flags and missing files: a message and exit status 2
#   - a short run on a synthetic task: the validation loss falls
#   - N steps + --save, then --resume for N more == 2N uninterrupted steps,
#     bit for bit (checkpoint files and the logged losses); with dropout,
#     gradient accumulation and clipping, so every piece of state matters
#   - truncated, garbage, bit-flipped and mismatched --resume files: rejected, exit 2
#   - a text file (--data) with sampling; --check-cache on a checkpoint
# Run from the build directory (automake's harness does); TRAIN_GPT overrides the binary.
set -u
TG=${TRAIN_GPT:-./examples/train_gpt}
[ -x "$TG" ] || { echo "train_gpt_smoke: $TG not built"; exit 99; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fg_train_gpt.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
n_ok=0
ok() { n_ok=$((n_ok + 1)); echo "ok: $*"; }
fail() {
    echo "FAIL: $*"
    [ -f "$tmp/out" ] && { echo "---- output"; tail -n 30 "$tmp/out"; }
    exit 1
}
# run EXPECTED_STATUS ARGS...: output in $tmp/out
run() {
    want=$1
    shift
    "$TG" "$@" > "$tmp/out" 2>&1
    got=$?
    [ "$got" = "$want" ] || fail "train_gpt $* exited $got, expected $want"
}
# expect_error PATTERN ARGS...: exit 2 with PATTERN in the message
expect_error() {
    pat=$1
    shift
    run 2 "$@"
    grep -q -- "$pat" "$tmp/out" || fail "train_gpt $*: no '$pat' in the message"
    ok "rejected: $(grep -m 1 -- "$pat" "$tmp/out" | cut -c1-150)"
}

TINY="--task reversal --digits 4 --layers 1 --heads 2 --width 32 --batch 16 --eval-iters 2 --eval-examples 50"
TINY="$TINY --sample 0 --plot="

# ---- arguments
run 0 --help
grep -q "tinyshakespeare" "$tmp/out" || fail "--help lacks the nanoGPT configuration"
ok "--help"
expect_error "unknown option" --bogus
expect_error "expected an integer" --layers x
expect_error "expected a number" --lr -1
expect_error "unknown task" --task nosuchtask
expect_error "exclude each other" --task sorting --data "$tmp/none.txt"
expect_error "cannot open" --data "$tmp/none.txt"
expect_error "multiple of --heads" --width 30 --heads 4
expect_error "needs a value" --steps
expect_error "not cpu or cuda" --device tpu
expect_error "cannot write to directory" --save "$tmp/nodir/x.st"
expect_error "too few to hold out" --task reversal --digits 2 --eval-examples 500

# ---- a short run: the validation loss falls, the CSV has the curve
run 0 $TINY --steps 60 --eval-interval 30 --pass-acc 0 --csv "$tmp/learn.csv"
[ "$(wc -l < "$tmp/learn.csv")" -eq 4 ] || fail "learn.csv: expected a header and 3 rows"
awk -F, 'NR == 2 { first = $3 } END { if (!($3 < 0.8 * first)) { print "val loss " first " -> " $3; exit 1 } }' \
    "$tmp/learn.csv" || fail "the validation loss did not fall"
grep -q "kv-cache check: .*: ok" "$tmp/out" || fail "no passing kv-cache check line"
grep -q "PASS" "$tmp/out" || fail "no PASS line"
ok "loss falls: $(awk -F, 'NR == 2 { f = $3 } END { print f " -> " $3 }' "$tmp/learn.csv")"

# ---- resume: 2N steps == N steps + save + resume + N steps, bit for bit
RES="$TINY --dropout 0.1 --accum 2 --grad-clip 0.5 --weight-decay 0.1 --warmup 4 --eval-interval 3 --pass-acc 0"
run 0 $RES --steps 12 --save "$tmp/full.st" --csv "$tmp/full.csv"
run 0 $RES --steps 6 --decay-steps 12 --save "$tmp/half.st" --csv "$tmp/half.csv"
cp "$tmp/half.st" "$tmp/half_copy.st"
run 0 $RES --steps 12 --resume "$tmp/half.st" --save "$tmp/resumed.st" --csv "$tmp/half.csv"
grep -q "resumed from .* at step 6" "$tmp/out" || fail "no 'resumed from ... at step 6' line"
grep -q "note:" "$tmp/out" && fail "notes about differing hyperparameters on an identical resume"
cmp "$tmp/full.st" "$tmp/resumed.st" || fail "the resumed checkpoint differs from the uninterrupted one"
# the curves without the timing columns: step, train loss, val loss, accuracy, lr
cut -d, -f1-5 "$tmp/full.csv" > "$tmp/full.cut"
cut -d, -f1-5 "$tmp/half.csv" > "$tmp/half.cut"
cmp -s "$tmp/full.cut" "$tmp/half.cut" || { diff "$tmp/full.cut" "$tmp/half.cut"; fail "the curves differ"; }
last_res=$(tail -n 1 "$tmp/half.cut")
ok "resume: 6 + 6 steps == 12 steps bit for bit (final row $last_res)"
# the test can tell: a differing hyperparameter gives another result (and a note)
run 0 $RES --steps 12 --lr 1e-3 --resume "$tmp/half_copy.st" --save "$tmp/other.st" --csv=
grep -q "note: train.lr" "$tmp/out" || fail "no note about the changed --lr"
cmp -s "$tmp/full.st" "$tmp/other.st" && fail "another --lr gave the same checkpoint"
ok "resume with another --lr: a note, and a different result"

# ---- bad --resume files
size=$(wc -c < "$tmp/full.st")
head -c 1000 "$tmp/full.st" > "$tmp/trunc.st"
expect_error "resume" $TINY --resume "$tmp/trunc.st"
echo "not a checkpoint" > "$tmp/garbage.st"
expect_error "resume" $TINY --resume "$tmp/garbage.st"
expect_error "resume" $TINY --resume "$tmp/nonexistent.st"
cp "$tmp/full.st" "$tmp/flip.st"
b=$(od -An -tu1 -j $((size - 1)) -N1 "$tmp/flip.st" | tr -d ' ')
printf "\\$(printf %o $(((b + 1) % 256)))" | dd of="$tmp/flip.st" bs=1 seek=$((size - 1)) conv=notrunc 2> /dev/null
cmp -s "$tmp/full.st" "$tmp/flip.st" && fail "the byte flip did not change the file"
expect_error "corrupted" $TINY --resume "$tmp/flip.st"
expect_error "model.n_layer" $TINY --layers 2 --resume "$tmp/full.st"
expect_error "model.n_embd" $TINY --width 64 --resume "$tmp/full.st"
expect_error "trained on --task reversal" --task sorting --digits 4 --resume "$tmp/full.st"
expect_error "digits" --task reversal --digits 5 --resume "$tmp/full.st"
expect_error "seed" $TINY --seed 7 --resume "$tmp/full.st"
if [ -x ./examples/ckpt_interop ] && ./examples/ckpt_interop write "$tmp/foreign.st" > /dev/null 2>&1; then
    expect_error "not a train_gpt checkpoint" $TINY --resume "$tmp/foreign.st"
fi

# ---- a checkpoint of a model: KV cache check only
run 0 --resume "$tmp/full.st" --check-cache
grep -q "kv-cache check: .*: ok" "$tmp/out" || fail "--check-cache did not pass"
ok "--check-cache on a checkpoint"

# ---- text: character-level model, sampling, text/task mismatch
i=0
: > "$tmp/text.txt"
while [ $i -lt 40 ]; do
    echo "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs." >> "$tmp/text.txt"
    i=$((i + 1))
done
run 0 --data "$tmp/text.txt" --layers 1 --heads 2 --width 32 --block 32 --batch 8 --steps 30 --eval-interval 15 \
    --eval-iters 2 --sample 40 --prompt "the " --save "$tmp/text.st" --csv "$tmp/text.csv" --plot=
grep -q "^---- sample (40 tokens" "$tmp/out" || fail "no text sample"
grep -q "vocabulary 29," "$tmp/out" || fail "the text vocabulary is not the file's 29 bytes"
ok "text: trained, sampled 40 characters"
expect_error "not in the vocabulary" --data "$tmp/text.txt" --prompt "THE" --steps 1
expect_error "trained on text" --task reversal --resume "$tmp/text.st"
expect_error "trained on task" --data "$tmp/text.txt" --resume "$tmp/full.st"
echo "abc" > "$tmp/tiny.txt"
expect_error "split needs" --data "$tmp/tiny.txt"
echo "the quick brown fox jumps over the lazy dog, vocabulary changed: Q Z" > "$tmp/other.txt"
i=0
while [ $i -lt 40 ]; do cat "$tmp/text.txt" >> "$tmp/other.txt"; i=$((i + 10)); done
expect_error "vocabulary" --data "$tmp/other.txt" --resume "$tmp/text.st"

echo "train_gpt_smoke: $n_ok checks passed"
exit 0
