set terminal pngcairo size 1800,650 noenhanced
set output 'curves.png'
set datafile missing 'NaN'
set grid
set xlabel 'inner step'
set xrange [0:10000]
set arrow 1 from 1000, graph 0 to 1000, graph 1 nohead lw 2 dt 3 lc rgb '#444444'
set label 1 'meta-training horizon (1000 steps)' at 1000, graph 0.03 right offset -0.5,0 font ',9'
set multiplot layout 1,3 title 'meta-test on fmnist_mlp_28_augmented (mean over 16 seeds, band: lowest to highest seed)'
set key top right font ',9'
set title 'training loss'
set logscale y
plot 'curves.dat' using 1:3:4 with filledcurves fc rgb '#000000' fs transparent solid 0.15 noborder notitle, 'curves.dat' using 1:6:7 with filledcurves fc rgb '#777777' fs transparent solid 0.15 noborder notitle, 'curves.dat' using 1:9:10 with filledcurves fc rgb '#6a3d9a' fs transparent solid 0.15 noborder notitle, 'curves.dat' using 1:12:13 with filledcurves fc rgb '#e69f00' fs transparent solid 0.15 noborder notitle, 'curves.dat' using 1:2 with lines lw 4 dt 1 lc rgb '#000000' title 'lopt', 'curves.dat' using 1:5 with lines lw 3 dt 2 lc rgb '#777777' title 'lopt_untrained', 'curves.dat' using 1:8 with lines lw 4 dt 4 lc rgb '#6a3d9a' title 'lopt_scheduled', 'curves.dat' using 1:11 with lines lw 2 dt 1 lc rgb '#e69f00' title 'adamw lr=0.001'
set title 'test loss'
plot 'test_loss.dat' using 1:3:4 with filledcurves fc rgb '#000000' fs transparent solid 0.15 noborder notitle, 'test_loss.dat' using 1:6:7 with filledcurves fc rgb '#777777' fs transparent solid 0.15 noborder notitle, 'test_loss.dat' using 1:9:10 with filledcurves fc rgb '#6a3d9a' fs transparent solid 0.15 noborder notitle, 'test_loss.dat' using 1:12:13 with filledcurves fc rgb '#e69f00' fs transparent solid 0.15 noborder notitle, 'test_loss.dat' using 1:2 with lines lw 4 dt 1 lc rgb '#000000' notitle, 'test_loss.dat' using 1:5 with lines lw 3 dt 2 lc rgb '#777777' notitle, 'test_loss.dat' using 1:8 with lines lw 4 dt 4 lc rgb '#6a3d9a' notitle, 'test_loss.dat' using 1:11 with lines lw 2 dt 1 lc rgb '#e69f00' notitle
set title 'test accuracy'
unset logscale y
plot 'test_accuracy.dat' using 1:3:4 with filledcurves fc rgb '#000000' fs transparent solid 0.15 noborder notitle, 'test_accuracy.dat' using 1:6:7 with filledcurves fc rgb '#777777' fs transparent solid 0.15 noborder notitle, 'test_accuracy.dat' using 1:9:10 with filledcurves fc rgb '#6a3d9a' fs transparent solid 0.15 noborder notitle, 'test_accuracy.dat' using 1:12:13 with filledcurves fc rgb '#e69f00' fs transparent solid 0.15 noborder notitle, 'test_accuracy.dat' using 1:2 with lines lw 4 dt 1 lc rgb '#000000' notitle, 'test_accuracy.dat' using 1:5 with lines lw 3 dt 2 lc rgb '#777777' notitle, 'test_accuracy.dat' using 1:8 with lines lw 4 dt 4 lc rgb '#6a3d9a' notitle, 'test_accuracy.dat' using 1:11 with lines lw 2 dt 1 lc rgb '#e69f00' notitle
unset multiplot
