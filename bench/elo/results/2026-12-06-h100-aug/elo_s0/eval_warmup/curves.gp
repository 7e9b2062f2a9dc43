set terminal pngcairo size 1100,700 noenhanced
set output '/tmp/study/elo_s0/eval_warmup/curves.png'
set title 'meta-test on fmnist_mlp_28_augmented: training loss (mean over seeds)'
set xlabel 'inner step'
set ylabel 'training loss'
set logscale y
set key outside right
set datafile missing 'NaN'
plot '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:2 with lines lw 4 dt 1 lc rgb '#000000' title columnheader(2), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:3 with lines lw 4 dt 2 lc rgb '#777777' title columnheader(3), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:4 with lines lw 4 dt 3 lc rgb '#777777' title columnheader(4), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:5 with lines lw 2 lc rgb '#e7298a' title columnheader(5), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:6 with lines lw 2 lc rgb '#66a61e' title columnheader(6), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:7 with lines lw 2 lc rgb '#e6ab02' title columnheader(7), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:8 with lines lw 2 lc rgb '#a6761d' title columnheader(8), '/tmp/study/elo_s0/eval_warmup/curves.dat' using 1:9 with lines lw 2 lc rgb '#1f78b4' title columnheader(9)
