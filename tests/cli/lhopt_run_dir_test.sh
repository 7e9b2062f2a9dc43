#!/bin/bash
# An LHOPT `lopt train` run directory across interruptions, as ELO's
# (run_dir_test.sh): kill -9 between two checkpoints, a restart that
# resumes, Ctrl-C, and a second restart to the end. metrics.csv must hold
# each PPO iteration once, in order, with wall_s cumulative; summary.json
# must count this run and the total; the messages must say where it stopped
# and where it resumes; the directory keeps job.textproto, rewards.png and
# a controller that loads.
#
#   lhopt_run_dir_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
JOB=$SRC/tests/data/resume_lhopt.textproto
D=$WORK/run
N=12
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out "$WORK"/*.err; do echo "--- $f"; cat "$f"; done; exit 1; }
rows() { echo $(($(wc -l <"$D/metrics.csv") - 1)); }
rm -rf "$WORK" && mkdir -p "$WORK"
TRAIN=("$LOPT" train --job "$JOB" --out "$D" --no-progress --no-eval --threads 1)

# 1. kill -9 after a row that no checkpoint covers (checkpoint_every 3).
"${TRAIN[@]}" >"$WORK/1.out" 2>"$WORK/1.err" &
pid=$!
# Deadlines in seconds, generous: a loaded machine (ctest -j2) is slow.
end=$((SECONDS + 90))
n=0
while [ $SECONDS -lt $end ]; do
  n=$( [ -s "$D/metrics.csv" ] && rows || echo 0)
  [ "$n" -ge 4 ] && [ $((n % 3)) -ne 0 ] && break
  sleep 0.01
done
[ "$n" -ge 4 ] || fail "lopt train did not reach iteration 4 in 90 s"
kill -9 $pid 2>/dev/null || fail "lopt train ended before it could be killed"
wait $pid 2>/dev/null
killed_rows=$(rows)

# 2. The restart says where it resumes and cuts metrics.csv back to it; then Ctrl-C.
"${TRAIN[@]}" >"$WORK/2.out" 2>"$WORK/2.err" &
pid=$!
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do grep -q "resuming" "$WORK/2.err" && break; sleep 0.01; done
k=$(sed -n "s|.*lopt train: resuming $D from its checkpoint at iteration \([0-9]*\) of $N (.* of training so far).*|\1|p" "$WORK/2.err")
[ -n "$k" ] || fail "the restart does not say where it resumes"
[ "$killed_rows" -gt "$k" ] || fail "the kill left no rows after the checkpoint ($killed_rows rows, checkpoint $k)"
[ $((k % 3)) -eq 0 ] || fail "resumed at iteration $k, not a checkpoint (every 3)"
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do [ "$(rows)" -ge $((k + 2)) ] && break; sleep 0.01; done
[ "$(rows)" -lt $N ] || fail "the restart finished before Ctrl-C could stop it"
kill -INT $pid
wait $pid || fail "lopt train exited $? on Ctrl-C"
grep -q "stopping after the PPO iteration under way" "$WORK/2.err" || fail "Ctrl-C is not acknowledged"
s=$(sed -n "s|^stopped at iteration \([0-9]*\) of $N, checkpointed in $D/checkpoint.pt (this run: \([0-9]*\) iterations.*$D/controller.lhopt holds the policy of that iteration; run the same command to resume|\1|p" "$WORK/2.out")
[ -n "$s" ] || fail "Ctrl-C does not say where it stopped"
[ "$(rows)" -eq "$s" ] || fail "metrics.csv has $(rows) rows after stopping at iteration $s"
grep -q "this run: $((s - k)) iterations" "$WORK/2.out" || fail "the stop does not count this run's iterations"
[ "$(sed -n 's/.*"stopped_early": \(.*\),$/\1/p' "$D/summary.json")" = true ] ||
  fail "summary.json of the stopped run does not say stopped_early: $(cat "$D/summary.json")"
"$LOPT" inspect "$D/controller.lhopt" >"$WORK/inspect_stopped.out" 2>&1 || fail "the stopped run's controller does not load"
grep -q "PPO iteration: $s of $N" "$WORK/inspect_stopped.out" ||
  fail "the stopped run's controller is not of iteration $s: $(cat "$WORK/inspect_stopped.out")"

# 3. The second restart runs to the end.
"${TRAIN[@]}" >"$WORK/3.out" 2>"$WORK/3.err" || fail "the second restart failed"
grep -q "resuming $D from its checkpoint at iteration $s of $N" "$WORK/3.err" || fail "no resume message at $s"
grep -q "^trained $((N - s)) PPO iterations in .* after resuming at iteration $s; $N of $N in " "$WORK/3.out" ||
  fail "the summary line does not count this run ($((N - s)) iterations) and the total"

# metrics.csv: iterations 0..N-1 once each, in order; wall_s never goes back.
head -1 "$D/metrics.csv" | grep -q '^iteration,mean_reward,.*,wall_s$' || fail "metrics.csv header: $(head -1 "$D/metrics.csv")"
awk -F, -v n=$N 'NR == 1 { next } { if ($1 != NR - 2) { print "row " NR ": iteration " $1; bad = 1 }
  if ($17 + 0 < last) { print "row " NR ": wall_s " $17 " < " last; bad = 1 } last = $17 + 0 }
  END { if (NR != n + 1) { print NR - 1 " rows"; bad = 1 } exit bad }' "$D/metrics.csv" ||
  fail "metrics.csv is not one row an iteration with cumulative wall_s: $(cat "$D/metrics.csv")"
last_wall=$(tail -1 "$D/metrics.csv" | cut -d, -f17)

# summary.json: the total and this run.
j() { sed -n "s/.*\"$1\": \([^,]*\),*$/\1/p" "$D/summary.json"; }
[ "$(j iterations)" = $N ] || fail "summary iterations $(j iterations)"
[ "$(j total_iterations)" = $N ] || fail "summary total_iterations $(j total_iterations)"
[ "$(j resumed_from)" = "$s" ] || fail "summary resumed_from $(j resumed_from)"
[ "$(j iterations_this_run)" = $((N - s)) ] || fail "summary iterations_this_run $(j iterations_this_run)"
[ "$(j stopped_early)" = false ] || fail "summary stopped_early $(j stopped_early)"
awk -v a="$(j wall_seconds)" -v b="$(j wall_seconds_this_run)" -v w="$last_wall" \
  'BEGIN { exit !(a > b && a + 0.001 >= w) }' || fail "summary wall_seconds is not cumulative: $(cat "$D/summary.json")"

# The run directory: its job, the plot of the rewards and the controller.
"$LOPT" validate "$D/job.textproto" >"$WORK/validate.out" 2>&1 || fail "job.textproto does not validate"
grep -q 'name: "resume_lhopt"' "$D/job.textproto" || fail "job.textproto is not the job"
[ "$(head -c 4 "$D/rewards.png" | tail -c 3)" = PNG ] || fail "no rewards.png"
"$LOPT" inspect "$D/controller.lhopt" >"$WORK/inspect.out" 2>&1 || fail "controller.lhopt does not load"
grep -q "PPO iteration: $N of $N" "$WORK/inspect.out" || fail "controller.lhopt is not of iteration $N: $(cat "$WORK/inspect.out")"
echo "PASS: killed at $killed_rows rows (checkpoint $k), Ctrl-C at $s, $N iterations in $last_wall s"
