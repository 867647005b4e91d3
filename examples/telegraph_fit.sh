#!/bin/sh
# Regenerates examples/telegraph_fit.csv: the mRNA count M of 3000 cells at stationarity, simulated
# from examples/telegraph.rxn at its parameters (kon = 0.5, koff = 1, ktx = 10; kdeg = 1), and fits
# it from the different starting point in examples/telegraph_fit.rxn (fit.json and the figure go
# to the current directory).
set -e
RXNC=${RXNC:-rxnc}
here=$(pwd)
cd "$(dirname "$0")"
$RXNC simulate telegraph.rxn --t-end 50 --every 50 -n 3000 --seed 2024 |
    awk -F, 'NR == 1 { print "M" } NR > 1 && $2 == 50 { print $5 }' > telegraph_fit.csv
$RXNC run telegraph_fit.rxn --fit telegraph_fit.csv -n 3000 --steps 500 --seed 1 --out "$here/telegraph_fit.json" --plot "$here/telegraph_fit.svg"
