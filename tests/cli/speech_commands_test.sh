#!/bin/bash
# README's speech_ctc commands, small: lopt gen-speech (deterministic under a
# seed, LibriSpeech's layout, a clear error without espeak-ng), lopt validate
# on a speech_ctc job (and a bad one refused naming the field), lopt eval with
# both shipped ELO optimizers reporting the test CTC loss and CER, lopt
# compare, an ELO mixture entry and an LHOPT controller evaluated on it.
# Prints SKIP (and passes nothing) where espeak-ng or sox is not installed.
#
#   speech_commands_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK/nopath"
# Without the programs on PATH: a message naming the missing one.
PATH="$WORK/nopath" "$LOPT" gen-speech --out "$WORK/none" >"$WORK/gen_none.out" 2>&1 &&
  fail "gen-speech ran without espeak-ng"
grep -q "lopt gen-speech needs espeak-ng, which is not on PATH" "$WORK/gen_none.out" ||
  fail "no message naming espeak-ng"
for p in espeak-ng sox; do
  command -v $p >/dev/null || { echo "SKIP: $p is not installed"; exit 0; }
done
GEN="--utterances 12 --max-words 2"
"$LOPT" gen-speech --out "$WORK/sp" --seed 1 $GEN >"$WORK/gen.out" 2>&1 || fail "gen-speech failed"
grep -q "wrote $WORK/sp: 6 training and 6 test utterances, 2 speakers" "$WORK/gen.out" ||
  fail "gen-speech did not say what it wrote"
"$LOPT" gen-speech --out "$WORK/sp_again" --seed 1 $GEN >"$WORK/gen2.out" 2>&1 || fail "gen-speech failed"
"$LOPT" gen-speech --out "$WORK/sp_other" --seed 2 $GEN >"$WORK/gen3.out" 2>&1 || fail "gen-speech failed"
diff -r "$WORK/sp" "$WORK/sp_again" >/dev/null || fail "the same seed wrote other bytes"
diff -r "$WORK/sp" "$WORK/sp_other" >/dev/null && fail "another seed wrote the same bytes"
[ "$(find "$WORK/sp/train" -name "*.wav" | wc -l)" = 6 ] || fail "not 6 training WAVs"
[ "$(cat "$WORK"/sp/test/*/*/*.trans.txt | wc -l)" = 6 ] || fail "not 6 test transcripts"
grep -qvE '^[0-9]+-[0-9]+-[0-9]{4} [A-Z ]+$' "$WORK"/sp/*/*/*/*.trans.txt && fail "a transcript line not in LibriSpeech's format"
"$LOPT" gen-speech --out "$WORK/x" --utterances 1 >"$WORK/gen_bad.out" 2>&1 && fail "gen-speech took 1 utterance"
grep -q -- "--utterances must be in \[2, 100000\]" "$WORK/gen_bad.out" || fail "no message naming --utterances"

SPEC="speech_ctc { data_path: \"$WORK/sp\" conv_channels: 4 conv_channels: 4 hidden_size: 16 batch_size: 4 }"
cat >"$WORK/job.textproto" <<JOB
name: "speech_smoke"
seed: 1
task { $SPEC }
eval { steps: 20 seeds: 2 record_every: 5 test_every: 10 adamw_lrs: 0.01 adamw_lrs: 0.001 }
JOB
"$LOPT" validate "$WORK/job.textproto" >"$WORK/validate.out" 2>&1 || fail "lopt validate refused the speech_ctc job"
echo "task { speech_ctc { data_path: \"$WORK/sp\" } }" >"$WORK/defaults.textproto"
"$LOPT" validate "$WORK/defaults.textproto" >"$WORK/validate_defaults.out" 2>&1 || fail "lopt validate refused a default speech_ctc job"
grep -q "conv_channels: 16" "$WORK/validate_defaults.out" || fail "validate did not fill in conv_channels"
sed 's/hidden_size: 16/hidden_size: 16 alphabet: "abca"/' "$WORK/job.textproto" >"$WORK/bad.textproto"
"$LOPT" validate "$WORK/bad.textproto" >"$WORK/validate_bad.out" 2>&1 && fail "lopt validate took a repeated letter"
grep -q "task.speech_ctc.alphabet has 'a' twice" "$WORK/validate_bad.out" || fail "no message naming the field"

"$LOPT" eval --optimizer "$SRC/models/fmnist8_elo.lopt" --job "$WORK/job.textproto" --out "$WORK/eval8" \
  --threads 1 --no-progress >"$WORK/eval8.out" 2>&1 || fail "lopt eval (fmnist8_elo) failed"
grep -q "test CTC loss *test CER" "$WORK/eval8.out" || fail "the table has no test CTC loss / CER columns"
grep -qE "^lopt +[0-9.]+ \+- " "$WORK/eval8.out" || fail "no lopt row"
grep -q "best AdamW of the grid" "$WORK/eval8.out" || fail "no best AdamW"
grep -q '"test_cer": [0-9.]*, "diverged"' "$WORK/eval8/report.json" || fail "report.json lacks the CER"
head -1 "$WORK/eval8/test_curves.csv" | grep -q "test_loss,test_accuracy,test_cer" || fail "test_curves.csv lacks the CER"
"$LOPT" eval --optimizer "$SRC/models/fmnist28_mlp_elo_xi0.lopt" --job "$WORK/job.textproto" --out "$WORK/eval28" \
  --steps 10 --seeds 1 --threads 1 --no-progress >"$WORK/eval28.out" 2>&1 || fail "lopt eval (fmnist28_mlp_elo_xi0) failed"
grep -q "test CER" "$WORK/eval28.out" || fail "no CER with fmnist28_mlp_elo_xi0"
"$LOPT" compare "$WORK/eval8" "$WORK/eval28" --out "$WORK/compare" >"$WORK/compare.out" 2>&1 ||
  fail "lopt compare of two speech_ctc reports failed"
grep -qE "eval8 +lopt +[0-9.]+ \+- [0-9.]+ +[0-9.]+ \+- [0-9.]+ +- +[0-9.]+%$" "$WORK/compare.out" ||
  fail "lopt compare's lopt row has no CER"

# BF16 mixed precision from the job spec.
sed 's/batch_size: 4 }/batch_size: 4 precision: BF16 }/' "$WORK/job.textproto" >"$WORK/bf16.textproto"
"$LOPT" eval --optimizer "$SRC/models/fmnist8_elo.lopt" --job "$WORK/bf16.textproto" --out "$WORK/eval_bf16" \
  --steps 10 --seeds 1 --threads 1 --no-progress >"$WORK/eval_bf16.out" 2>&1 || fail "lopt eval on BF16 failed"
grep -q "speech_ctc_c4x4_gru16x1_bf16" "$WORK/eval_bf16.out" || fail "the BF16 task is not named so"

# ELO: meta-training on a mixture with a speech_ctc entry, then its meta-test.
cat >"$WORK/elo.textproto" <<JOB
name: "speech_elo"
seed: 1
task { $SPEC }
elo { tasks { task { $SPEC } }
      tasks { task { fmnist_mlp { image_size: 8 hidden_sizes: 8 batch_size: 32 } } } }
pes { num_tasks: 2 truncation_length: 5 min_unroll_length: 5 max_unroll_length: 20 }
budget { outer_steps: 2 checkpoint_every: 2 }
eval { steps: 10 seeds: 1 record_every: 5 adamw_lrs: 0.01 }
JOB
"$LOPT" train --job "$WORK/elo.textproto" --out "$WORK/elo_run" --threads 1 --fresh --no-progress \
  >"$WORK/elo_train.out" 2>&1 || fail "lopt train (ELO with a speech_ctc entry) failed"
[ -f "$WORK/elo_run/optimizer.lopt" ] || fail "no optimizer.lopt"
grep -q "test CER" "$WORK/elo_train.out" || fail "lopt train's meta-test on speech_ctc has no CER"

# LHOPT: a controller trained on a mixture with a speech_ctc entry, then
# evaluated on it (lopt eval --controller reports the CER too).
cat >"$WORK/lhopt.textproto" <<JOB
name: "speech_lhopt"
seed: 2
task { $SPEC }
eval { steps: 20 seeds: 1 record_every: 5 adamw_lrs: 0.01 }
lhopt {
  tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } }
  tasks { task { $SPEC } weight: 2 }
  min_inner_steps: 10 max_inner_steps: 20 min_decisions: 2 max_decisions: 4
  particles: 2 episodes_per_iteration: 2 iterations: 1 hidden_size: 8
  curve_points: 3 baseline_refresh_iterations: 1 instances_per_task: 1
}
JOB
"$LOPT" train --job "$WORK/lhopt.textproto" --out "$WORK/lhopt_run" --threads 1 --no-eval --no-progress \
  >"$WORK/lhopt_train.out" 2>&1 || fail "lopt train (LHOPT with a speech_ctc entry) failed"
"$LOPT" eval --controller "$WORK/lhopt_run/controller.lhopt" --job "$WORK/lhopt.textproto" --out "$WORK/lhopt_eval" \
  --seeds 1 --threads 1 >"$WORK/lhopt_eval.out" 2>&1 || fail "lopt eval --controller on speech_ctc failed"
grep -q "test CER" "$WORK/lhopt_eval.out" || fail "lopt eval --controller has no CER"
grep -q '"test_cer": ' "$WORK/lhopt_eval/report.json" || fail "the LHOPT report lacks the CER"
echo PASS
