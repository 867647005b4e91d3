#!/bin/sh
# Regenerates examples/sir_fit.csv: infectious I and recovered R in 300 independent outbreaks
# observed every 10 days up to day 100, simulated from examples/sir.rxn at its parameters
# (beta = 0.3, gamma = 0.1), and fits them from the different starting point in
# examples/sir_fit.rxn (fit.json and the figure go to the current directory).
set -e
RXNC=${RXNC:-rxnc}
here=$(pwd)
cd "$(dirname "$0")"
$RXNC simulate sir.rxn --t-end 100 --every 10 -n 300 --seed 2024 |
    awk -F, 'NR == 1 { print "time,I,R" } NR > 1 && $2 > 0 { print $2 "," $4 "," $5 }' > sir_fit.csv
$RXNC run sir_fit.rxn --fit sir_fit.csv --seed 1 --out "$here/sir_fit.json" --plot "$here/sir_fit.svg"
