"""Whole-process time of the command `../shared/peers/grad_bench.py` times (one GS-ST gradient of the
telegraph model, 256 trajectories, T = 50), measured from a plain Python process. The peer script
spawns rxnc from a process that has just run JAX, whose worker threads keep one core busy for about
30 ms afterwards, so its figure for rxnc depends on the machine's load as much as on rxnc;
`--busy` reproduces that load with a process spinning on one core for the whole measurement.

    python3 benches/grad_process_time.py [--runs 60] [--busy] RXNC [RXNC ...] [-- EXTRA ARGS]

With several binaries (builds to compare), their runs alternate, so that a change in the
machine's speed during the measurement affects them alike. Arguments after `--` are appended to
the command (for example `-- --threads 1`). Prints the median, quartiles and minimum per binary."""
import argparse, os, statistics, subprocess, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=60)
parser.add_argument("--busy", action="store_true", help="keep one core busy while measuring")
parser.add_argument("binaries", nargs="+")
argv = sys.argv[1:]
extra = argv[argv.index("--") + 1:] if "--" in argv else []
args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)

here = os.path.dirname(os.path.abspath(__file__))
model = os.path.join(here, "..", "..", "shared", "peers", "models", "telegraph_grad.rxn")
base = ["grad", model, "--objective", "(mean(M) - 3)^2 + (var(M) - 12)^2", "--t-end", "50.0",
        "-n", "256", "--estimator", "gs-st", "--json"] + extra
spinner = None
if args.busy:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
try:
    for rxnc in args.binaries:  # warm-up: fills the code cache, as the peer script's first run
        subprocess.run([rxnc] + base + ["--seed", "0"], check=True, stdout=subprocess.DEVNULL)
    times = {rxnc: [] for rxnc in args.binaries}
    for seed in range(1, args.runs + 1):
        for rxnc in args.binaries:
            t0 = time.perf_counter()
            subprocess.run([rxnc] + base + ["--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
            times[rxnc].append(time.perf_counter() - t0)
finally:
    if spinner:
        spinner.kill()
load = "one core busy" if args.busy else "idle machine"
for rxnc, ts in times.items():
    q = statistics.quantiles(ts, n=4)
    print(f"{rxnc} ({load}{', ' + ' '.join(extra) if extra else ''}): {args.runs} runs, median "
          f"{1e3 * statistics.median(ts):.2f} ms, quartiles {1e3 * q[0]:.2f}-{1e3 * q[2]:.2f} ms, "
          f"min {1e3 * min(ts):.2f} ms")
