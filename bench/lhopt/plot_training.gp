# Training reward (10-iteration moving mean) and fixed-yardstick score of the
# two runs of run_experiments.sh. Usage:
#   gnuplot -e "dir='runs/lhopt'; out='bench/lhopt/results/train_yardstick.png'" bench/lhopt/plot_training.gp
set terminal pngcairo size 1100,650 noenhanced
set output out
set datafile separator ','
set key center right
set xzeroaxis
set title 'LHOPT on the quadratic + Fashion-MNIST mixture: training reward vs fixed yardstick'
set xlabel 'PPO iteration'
set ylabel 'log speed-up'
set yrange [-0.5:3]
set grid
# moving mean of the reward over the last 10 iterations
samples(x) = $0 > 9 ? 10 : ($0+1)
avg10(x) = (back9 = back8, back8 = back7, back7 = back6, back6 = back5, back5 = back4, back4 = back3, back3 = back2, back2 = back1, back1 = shift0, shift0 = x, (back1+back2+back3+back4+back5+back6+back7+back8+back9+shift0)/samples($0))
init(x) = (back1 = back2 = back3 = back4 = back5 = back6 = back7 = back8 = back9 = shift0 = 0)
plot \
  dir.'/mix_lr2e-4/metrics.csv' every ::1 using 1:(($0 == 0 ? init(0) : 0), avg10($2)) with lines lw 1 lc rgb '#9ecae1' title 'reward vs EMA baseline, lr 2e-4 (10-it. mean)', \
  dir.'/mix_lr1e-3/metrics.csv' every ::1 using 1:(($0 == 0 ? init(0) : 0), avg10($2)) with lines lw 1 lc rgb '#fdae6b' title 'reward vs EMA baseline, lr 1e-3 (10-it. mean)', \
  dir.'/mix_lr2e-4/yardstick.csv' every ::1 using 1:2 with linespoints lw 3 pt 7 ps 0.6 lc rgb '#08519c' title 'yardstick (fixed reference), lr 2e-4', \
  dir.'/mix_lr1e-3/yardstick.csv' every ::1 using 1:2 with linespoints lw 3 pt 7 ps 0.6 lc rgb '#d94801' title 'yardstick (fixed reference), lr 1e-3'
