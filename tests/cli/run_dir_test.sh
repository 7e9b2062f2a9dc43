#!/bin/bash
# A `lopt train` run directory across interruptions, as a user meets it:
# kill -9 between two checkpoints (the last checkpoint's optimizer.lopt stays), a
# restart that resumes, Ctrl-C delivered twice within a second (as `timeout` does), and a
# second restart to the end. metrics.csv must hold each outer step once, in
# order, with wall_s cumulative; summary.json must count this run and the
# total; the messages must say where it stopped and where it resumes; the
# directory keeps job.textproto and training.png; bench/time_to_loss.py
# reads the result.
#
#   run_dir_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
JOB=$SRC/tests/data/resume_job.textproto
D=$WORK/run
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out "$WORK"/*.err; do echo "--- $f"; cat "$f"; done; exit 1; }
rows() { echo $(($(wc -l <"$D/metrics.csv") - 1)); }
rm -rf "$WORK" && mkdir -p "$WORK"
TRAIN=("$LOPT" train --job "$JOB" --out "$D" --no-progress --no-eval --threads 1)

# 1. kill -9 after a row that no checkpoint covers (checkpoint_every 3).
"${TRAIN[@]}" >"$WORK/1.out" 2>"$WORK/1.err" &
pid=$!
# Deadlines in seconds, generous: a loaded machine (ctest -j2) is slow.
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do
  n=$( [ -s "$D/metrics.csv" ] && rows || echo 0)
  [ "$n" -ge 4 ] && [ $((n % 3)) -ne 0 ] && break
  sleep 0.01
done
[ "$n" -ge 4 ] || fail "lopt train did not reach outer step 4 in 60 s"
kill -9 $pid 2>/dev/null || fail "lopt train ended before it could be killed"
wait $pid 2>/dev/null
killed_rows=$(rows)
# Each checkpoint writes the optimizer of its step: the killed run left one.
"$LOPT" inspect "$D/optimizer.lopt" >"$WORK/killed_inspect.out" 2>&1 ||
  fail "kill -9 left no readable optimizer.lopt: $(cat "$WORK/killed_inspect.out")"

# 2. The restart says where it resumes and cuts metrics.csv back to it; then Ctrl-C.
"${TRAIN[@]}" >"$WORK/2.out" 2>"$WORK/2.err" &
pid=$!
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do grep -q "resuming" "$WORK/2.err" && break; sleep 0.01; done
k=$(sed -n "s|.*lopt train: resuming $D from its checkpoint at outer step \([0-9]*\) of 12 .*|\1|p" "$WORK/2.err")
[ -n "$k" ] || fail "the restart does not say where it resumes"
[ "$killed_rows" -gt "$k" ] || fail "the kill left no rows after the checkpoint ($killed_rows rows, checkpoint $k)"
grep -q "outer step: $k of 12" "$WORK/killed_inspect.out" ||
  fail "the killed run's optimizer.lopt is not its checkpoint's (step $k): $(cat "$WORK/killed_inspect.out")"
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ]; do [ "$(rows)" -ge $((k + 2)) ] && break; sleep 0.01; done
# Twice within a second, as `timeout` and `kill -- -PGID` deliver it (to the
# process, then to its group): one request to stop, not "again to quit now".
kill -INT $pid; sleep 0.2; kill -INT $pid
wait $pid || fail "lopt train exited $? on Ctrl-C delivered twice within a second"
grep -q "stopping after the outer step under way" "$WORK/2.err" || fail "Ctrl-C is not acknowledged"
s=$(sed -n "s|^stopped at outer step \([0-9]*\) of 12, checkpointed in $D/checkpoint.pt (this run: \([0-9]*\) outer steps.*run the same command to resume|\1|p" "$WORK/2.out")
[ -n "$s" ] || fail "Ctrl-C does not say where it stopped"
[ "$(rows)" -eq "$s" ] || fail "metrics.csv has $(rows) rows after stopping at step $s"
grep -q "this run: $((s - k)) outer steps" "$WORK/2.out" || fail "the stop does not count this run's steps"
# Stopped at alpha = s / 11 < 1: the run says its optimizer is not ready to train alone.
grep -q "note: behaviour cloning's alpha is 0\.[0-9]* at this step.*not expected to train alone" "$WORK/2.err" ||
  fail "a stop before alpha reaches 1 does not say the optimizer is not ready"
grep -q "\"alpha\": 0\.[0-9]" "$D/summary.json" || fail "summary.json of the stopped run has no alpha < 1"

# 3. The second restart runs to the end.
"${TRAIN[@]}" >"$WORK/3.out" 2>"$WORK/3.err" || fail "the second restart failed"
grep -q "resuming $D from its checkpoint at outer step $s of 12" "$WORK/3.err" || fail "no resume message at $s"
grep -q "^trained $((12 - s)) outer steps in .* after resuming at outer step $s; 12 of 12 in " "$WORK/3.out" ||
  fail "the summary line does not count this run ($((12 - s)) steps) and the total"

# metrics.csv: outer steps 0..11 once each, in order; wall_s never goes back.
awk -F, 'NR == 1 { next } { if ($1 != NR - 2) { print "row " NR ": outer_step " $1; bad = 1 }
  if ($11 + 0 < last) { print "row " NR ": wall_s " $11 " < " last; bad = 1 } last = $11 + 0 }
  END { if (NR != 13) { print NR - 1 " rows"; bad = 1 } exit bad }' "$D/metrics.csv" ||
  fail "metrics.csv is not one row an outer step with cumulative wall_s: $(cat "$D/metrics.csv")"
last_wall=$(tail -1 "$D/metrics.csv" | cut -d, -f11)

# summary.json: the total and this run.
j() { sed -n "s/.*\"$1\": \([^,]*\),*$/\1/p" "$D/summary.json"; }
[ "$(j outer_steps)" = 12 ] || fail "summary outer_steps $(j outer_steps)"
[ "$(j alpha)" = 1 ] || fail "summary alpha $(j alpha) at the end of the ramp"
[ "$(j resumed_from)" = "$s" ] || fail "summary resumed_from $(j resumed_from)"
[ "$(j outer_steps_this_run)" = $((12 - s)) ] || fail "summary outer_steps_this_run $(j outer_steps_this_run)"
awk -v a="$(j wall_seconds)" -v b="$(j wall_seconds_this_run)" -v w="$last_wall" \
  'BEGIN { exit !(a > b && a + 0.001 >= w) }' || fail "summary wall_seconds is not cumulative: $(cat "$D/summary.json")"

# The run directory: its job, and the plot of the meta-training.
"$LOPT" validate "$D/job.textproto" >"$WORK/validate.out" 2>&1 || fail "job.textproto does not validate"
grep -q 'name: "resume"' "$D/job.textproto" || fail "job.textproto is not the job"
[ "$(head -c 4 "$D/training.png" | tail -c 3)" = PNG ] || fail "no training.png"
for col in meta_loss task_loss alpha particle_steps_per_s; do
  grep -q "'$col'" "$D/training.gp" || fail "training.png does not plot $col"
done

# bench/time_to_loss.py reads the resumed run: 12 outer steps in the cumulative time.
python3 "$SRC/bench/time_to_loss.py" "$D/metrics.csv" --window 3 >"$WORK/ttl.out" 2>&1 || fail "time_to_loss.py failed"
grep -q "12 outer steps in $(printf %.1f "$last_wall") s" "$WORK/ttl.out" || fail "time_to_loss.py misreads the run: $(cat "$WORK/ttl.out")"
# ... and refuses a metrics.csv with repeated outer steps (a resume before this fix).
{ cat "$D/metrics.csv"; tail -n +5 "$D/metrics.csv"; } >"$WORK/dup.csv"
python3 "$SRC/bench/time_to_loss.py" "$WORK/dup.csv" --window 3 >"$WORK/dup.out" 2>&1 &&
  fail "time_to_loss.py accepts repeated outer steps"
grep -q "outer_step" "$WORK/dup.out" || fail "time_to_loss.py does not say what is wrong: $(cat "$WORK/dup.out")"
echo "PASS: killed at $killed_rows rows (checkpoint $k), Ctrl-C at $s, 12 steps in $last_wall s"
