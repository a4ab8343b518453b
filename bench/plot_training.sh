#!/bin/sh
# Loss curves of a train_gpt CSV and a bench/train_vs_torch.py shakespeare CSV
# in one PNG (needs gnuplot):
#   bench/plot_training.sh FLASHGRAD.csv TORCH.csv OUT.png [TITLE]
set -eu
[ $# -ge 3 ] || { echo "usage: $0 FLASHGRAD.csv TORCH.csv OUT.png [TITLE]" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "$0: gnuplot is not installed" >&2; exit 1; }
gnuplot <<GP
set terminal pngcairo size 900,560 font ",11"
set output "$3"
set datafile separator ","
set key top right
set grid
set xlabel "step"
set ylabel "cross-entropy loss (nats/char)"
set title "${4:-shakespeare-char}"
set yrange [0.5:4.5]
plot "$1" every ::1 using 1:2 with lines lw 2 lc rgb "#1f77b4" title "flashgrad train", \
     "$1" every ::1 using 1:3 with linespoints lw 2 pt 7 ps 0.6 lc rgb "#1f77b4" dt 2 title "flashgrad val", \
     "$2" every ::1 using 1:2 with lines lw 2 lc rgb "#d62728" title "PyTorch train", \
     "$2" every ::1 using 1:3 with linespoints lw 2 pt 5 ps 0.6 lc rgb "#d62728" dt 2 title "PyTorch val"
GP
echo "wrote $3"
