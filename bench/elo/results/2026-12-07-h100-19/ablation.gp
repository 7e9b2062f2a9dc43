# The ablation (the paper's Figure 7 analogue) over meta-training seeds: each point is one
# meta-training seed's final train loss at 10,000 steps, the mean over 16 meta-test seeds
# (ablation.dat, from ../../paired.py --by-variant --dat); lines: the best AdamW of the grid.
# ELO s4 (1.274 as trained, 3.000 scheduled: it diverges on some meta-test seeds) is above the
# chart and printed as a label.
set terminal pngcairo size 1400,600 noenhanced
set output 'ablation.png'
set grid ytics
set ylabel 'final train loss at 10,000 steps (mean of 16 meta-test seeds)'
set xtics rotate by -30
set xrange [-0.5:11.5]
set yrange [0.3:0.5]
set key outside right
set label 1 'ELO s4: 1.274 (as trained), 3.000 (scheduled): off the chart' at 0.2,0.49
set title 'ELO ablation on Fashion-MNIST 28x28, 784-128-128-10: one point a meta-training seed (elo: 2,400 outer steps; elo_5k: 5,000)'
plot for [s=2:6] 'ablation.dat' using 0:s:xtic(1) with points pt 7 ps 1.5 title sprintf('meta-training seed %d', s-2), \
     0.3614 with lines lw 2 dt 2 title 'AdamW constant, best lr 1e-3', \
     0.3231 with lines lw 2 dt 3 title 'AdamW warm-up + cosine, best peak 3e-3'
