"""The stochastix GS-ST gradient (DifferentiableDirect, exact forward pass) of a final-time mean, with
standard errors from the per-trajectory gradients: the reference numbers quoted in docs/gradients.md.

    PEERS_VENV/bin/python docs/figures/stochastix_values.py telegraph 50 1 2000
    PEERS_VENV/bin/python docs/figures/stochastix_values.py association 10 0.2 2000

Arguments: model (telegraph: d mean(M)/d(kon, koff, ktx, kdeg) of shared/peers/models/telegraph_grad.rxn;
association: d mean(C)/d(kon, koff) of examples/association.rxn), horizon T, temperature
(logits_scale), trajectories N, and optionally the seed of jax.random.PRNGKey (default 0).
The scan length is 30 steps per unit time for the telegraph model (about 7.3 events per unit time)
and 60 + 30 T for association (17 events by T = 0.01, 144 by T = 10, about 10 per unit time later).
"""
import sys
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
import stochastix as stx  # noqa: E402
from stochastix.kinetics import MassAction  # noqa: E402

model, T, temp, N = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0

if model == "telegraph":
    k0 = jnp.array([0.5, 1.0, 10.0, 1.0])
    names = ["kon", "koff", "ktx", "kdeg"]
    steps = int(30 * T)

    def network(k):
        return stx.ReactionNetwork([
            stx.Reaction("Goff -> Gon", MassAction(k=k[0])), stx.Reaction("Gon -> Goff", MassAction(k=k[1])),
            stx.Reaction("Gon -> Gon + M", MassAction(k=k[2])), stx.Reaction("M -> 0", MassAction(k=k[3]))])

    initial, observed = {"Goff": 1.0}, "M"
elif model == "association":
    k0 = jnp.array([1.0, 0.1])
    names = ["kon", "koff"]
    steps = int(60 + 30 * T)

    def network(k):
        return stx.ReactionNetwork([
            stx.Reaction("A + B -> C", MassAction(k=k[0])), stx.Reaction("C -> A + B", MassAction(k=k[1]))])

    initial, observed = {"A": 50.0, "B": 50.0}, "C"
else:
    sys.exit(f"unknown model {model}: telegraph or association")


def final(k, key):
    net = network(k)
    x0 = jnp.zeros(len(net.species))
    for name, value in initial.items():
        x0 = x0.at[net.species.index(name)].set(value)
    sol = stx.stochsimsolve(key, net, x0, T=T, max_steps=steps, solver=stx.DifferentiableDirect(logits_scale=temp),
                            save_trajectory=False, save_propensities=False)
    return sol.x[-1][net.species.index(observed)]


keys = jax.random.split(jax.random.PRNGKey(seed), N)
per_trajectory = jax.jit(jax.vmap(jax.value_and_grad(final), in_axes=(None, 0)))
t0 = time.perf_counter()
values, grads = per_trajectory(k0, keys)
elapsed = time.perf_counter() - t0
print(f"stochastix {model} T={T} temperature={temp} N={N} seed={seed}: mean({observed}) = {float(values.mean()):.4f}"
      f" ({elapsed:.1f} s)")
for q, name in enumerate(names):
    g = grads[:, q]
    print(f"  d/d{name} = {float(g.mean()):.4f} ± {float(g.std(ddof=1) / N ** 0.5):.4f}")
