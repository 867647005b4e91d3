"""Values (not timing) of the stochastix GS-ST gradient of mean(M) on the telegraph model, to compare
with `rxnc grad ../shared/peers/models/telegraph_grad.rxn --objective "mean(M)" --t-end 50 -n 2000`.
Usage: PEERS_VENV/bin/python benches/stochastix_grad_values.py T N   (e.g. 50 2000)"""
import jax, jax.numpy as jnp, sys
jax.config.update("jax_enable_x64", True)
import stochastix as stx
from stochastix.kinetics import MassAction
T=float(sys.argv[1]); N=int(sys.argv[2])
def loss(logk, keys):
    k = jnp.exp(logk)
    net = stx.ReactionNetwork([
        stx.Reaction("Goff -> Gon", MassAction(k=k[0])), stx.Reaction("Gon -> Goff", MassAction(k=k[1])),
        stx.Reaction("Gon -> Gon + M", MassAction(k=k[2])), stx.Reaction("M -> 0", MassAction(k=k[3]))])
    x0 = jnp.array([1.0, 0.0, 0.0])
    def one(key):
        sol = stx.stochsimsolve(key, net, x0, T=T, max_steps=int(30*T), solver=stx.DifferentiableDirect(),
                                save_trajectory=False, save_propensities=False)
        return sol.x[-1]
    m = jax.vmap(one)(keys)[:, net.species.index("M")]
    return jnp.mean(m)
g = jax.jit(jax.value_and_grad(loss))
k = jnp.array([0.5, 1.0, 10.0, 1.0])
v, d = g(jnp.log(k), jax.random.split(jax.random.PRNGKey(0), N))
print("value", v, "grad dk", d / k)
