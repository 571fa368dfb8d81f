set terminal pngcairo size 1200,560 font ",10"
set output "/work/main/bench/results/20261202T235932Z/hot/throughput.png"
set title "no-op tasks (or requests) per second, 2 CPUs shared with the client (1-min load average: hot-start 1.74)"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.75
set yrange [0:*]
set grid ytics
set ylabel "per second"
set xtics rotate by -35 left font ",8"
set bmargin 9
unset key
plot "/work/main/bench/results/20261202T235932Z/hot/throughput.dat" using 2:xtic(1) lc rgb "#3b6ea8", \
     "" using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 font ",8"
