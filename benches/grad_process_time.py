"""Whole-process time of the command `../shared/peers/grad_bench.py` times (one GS-ST gradient of the
telegraph model, 256 trajectories, T = 50), measured from a plain Python process: the peer script
spawns rxnc from a process that has just run JAX, whose worker threads keep a core busy for a while
afterwards, so its figure for rxnc depends on the machine's load as much as on rxnc.

    python3 benches/grad_process_time.py target/release/rxnc [runs]

Prints the median, quartiles and minimum over `runs` (default 60) runs with different seeds."""
import os, statistics, subprocess, sys, time

rxnc = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 60
here = os.path.dirname(os.path.abspath(__file__))
model = os.path.join(here, "..", "..", "shared", "peers", "models", "telegraph_grad.rxn")
cmd = [rxnc, "grad", model, "--objective", "(mean(M) - 3)^2 + (var(M) - 12)^2", "--t-end", "50.0",
       "-n", "256", "--estimator", "gs-st", "--json"]
subprocess.run(cmd + ["--seed", "0"], check=True, stdout=subprocess.DEVNULL)
times = []
for seed in range(1, runs + 1):
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    times.append(time.perf_counter() - t0)
q = statistics.quantiles(times, n=4)
print(f"rxnc grad, whole process, {runs} runs: median {1e3 * statistics.median(times):.2f} ms, "
      f"quartiles {1e3 * q[0]:.2f}-{1e3 * q[2]:.2f} ms, min {1e3 * min(times):.2f} ms")
