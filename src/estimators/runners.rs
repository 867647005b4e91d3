//! The per-trajectory work of each estimator, and how its records become moments.

use super::{Estimator, GradOptions, LeafMoments, Leaves, Record};
use crate::engine::{SimError, Trajectory, stream_rng};
use crate::estimators::Dual;
use crate::ir;
use crate::jit::CompiledModel;
use rand::Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use std::sync::atomic::AtomicBool;

/// Extra probability mass of the uniformised clock's no-op channel in `alt-path`:
/// the clock runs at `(1 + RHO) a0(x)`.
pub const ALT_PATH_RHO: f64 = 0.25;

/// Keys separating the auxiliary random streams from the trajectories' own.
const FD_KEY: u64 = 0x5EED_0F0D_0000_0001;
const ALT_KEY: u64 = 0x5EED_0A17_0000_0002;

/// How `fd` perturbs a parameter: multiplicatively (in log space) for positive rates, additively
/// with a width of `max(|θ|, 1)` otherwise.
#[derive(Debug, Clone, Copy)]
pub struct FdScale {
    log: bool,
    width: f64,
}

pub fn fd_scales(model: &ir::Model, params: &[f64]) -> Vec<FdScale> {
    model
        .params
        .iter()
        .zip(params)
        .map(|(p, &v)| {
            let log = v > 0.0 && p.bounds.is_none_or(|(lo, _)| lo >= 0.0);
            FdScale {
                log,
                width: if log { v } else { v.abs().max(1.0) },
            }
        })
        .collect()
}

impl FdScale {
    fn perturb(&self, v: f64, delta: f64) -> f64 {
        if self.log {
            v * delta.exp()
        } else {
            v + self.width * delta
        }
    }
    /// d(coordinate)/dθ: converts a derivative in the perturbation coordinate to one in θ.
    pub fn to_theta(self) -> f64 {
        1.0 / self.width
    }
}

/// Propensities with their partial derivatives.
struct Partials {
    a: Vec<f64>,
    dadp: Vec<f64>,
    dadx: Vec<f64>,
    dadt: Vec<f64>,
}

impl Partials {
    fn new(c: &CompiledModel) -> Self {
        let (nr, ns, np) = (c.n_reactions(), c.n_species(), c.model.params.len());
        Partials {
            a: vec![0.0; nr],
            dadp: vec![0.0; nr * np],
            dadx: vec![0.0; nr * ns],
            dadt: vec![0.0; nr],
        }
    }
    fn eval(
        &mut self,
        c: &CompiledModel,
        x: &[i64],
        p: &[f64],
        t: f64,
        index: usize,
    ) -> Result<f64, SimError> {
        let a0 = c.partials(
            x,
            p,
            t,
            &mut self.a,
            &mut self.dadp,
            &mut self.dadx,
            &mut self.dadt,
        );
        if let Some(k) = self.a.iter().position(|v| !(*v >= 0.0)) {
            return Err(SimError::InvalidPropensity {
                reaction: c.model.reactions[k].name.clone(),
                value: self.a[k],
                time: t,
                state: named_state(c, x),
                trajectory: index,
            });
        }
        // A non-finite derivative would poison the estimate silently (alt-path's weights, for
        // one, would skip it): stop and name it.
        let np = p.len();
        let bad = c
            .pattern
            .dparam
            .iter()
            .find(|&&(k, q)| !self.dadp[k * np + q].is_finite());
        if let Some(&(k, q)) = bad {
            return Err(SimError::NonFiniteDerivative {
                reaction: c.model.reactions[k].name.clone(),
                param: c.model.params[q].name.clone(),
                value: self.dadp[k * np + q],
                time: t,
                state: named_state(c, x),
                trajectory: index,
            });
        }
        Ok(a0)
    }
}

fn named_state(c: &CompiledModel, x: &[i64]) -> Vec<(String, i64)> {
    c.model
        .species
        .iter()
        .zip(x)
        .map(|(s, &v)| (s.name.clone(), v))
        .collect()
}

fn too_many(c: &CompiledModel, x: &[i64], t: f64, limit: u64, index: usize) -> SimError {
    SimError::TooManyEvents {
        limit,
        time: t,
        trajectory: index,
        state: named_state(c, x),
    }
}

fn apply(c: &CompiledModel, j: usize, x: &mut [i64]) {
    for &(i, d) in &c.model.reactions[j].net {
        x[i] += d;
    }
}

/// The reaction whose cumulative propensity first exceeds `r`, if any.
fn select(a: &[f64], r: f64) -> Option<usize> {
    let mut acc = 0.0;
    for (j, &v) in a.iter().enumerate() {
        acc += v;
        if r < acc {
            return Some(j);
        }
    }
    None
}

fn select_or_last(a: &[f64], r: f64) -> usize {
    select(a, r).unwrap_or_else(|| a.iter().rposition(|&v| v > 0.0).unwrap_or(0))
}

/// Runs trajectory `n` under the estimator, recording the leaves and the estimator's material at
/// every observation time in `times` (ascending, the last one no later than `o.t_end`). The record
/// holds one block per time: `f` is `[time][leaf]`, `extra` is `[time][extra_len]`.
pub fn run(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    fd: &[FdScale],
    n: usize,
) -> Result<Record, SimError> {
    match o.estimator {
        Estimator::GsSt { temperature } => gs_st(c, p, leaves, times, o, temperature, n),
        Estimator::Score => score(c, p, leaves, times, o, n),
        Estimator::AltPath => alt_path(c, p, leaves, times, o, n),
        Estimator::Fd { sigma } => finite_differences(c, p, leaves, times, o, fd, sigma, n),
    }
}

/// Length of a record's `extra` block per observation time.
pub fn extra_len(est: Estimator, nl: usize, np: usize) -> usize {
    match est {
        Estimator::GsSt { .. } => nl * np,
        Estimator::Score => np + nl * np,
        Estimator::AltPath => nl * np + np + np * nl,
        Estimator::Fd { .. } => 2 * nl + np,
    }
}

/// Straight-through Gumbel-Softmax. `extra` holds the pathwise derivative of every leaf, `[m][q]`.
fn gs_st(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    temp: f64,
    n: usize,
) -> Result<Record, SimError> {
    let (nr, ns, np) = (c.n_reactions(), c.n_species(), p.len());
    let mut rng = stream_rng(o.seed, n as u64);
    let mut x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let mut dx = vec![0.0; ns * np];
    let mut dt = vec![0.0; np];
    let mut da = vec![0.0; nr * np];
    let mut clocks = vec![0.0; nr];
    let mut dy = vec![0.0; nr * np];
    let mut mean_dz = vec![0.0; np];
    let time_dependent = !c.pattern.dtime.is_empty();
    // Softmax scratch for temperatures other than 1.
    let (mut z, mut w) = (vec![0.0; nr], vec![0.0; nr]);
    let stoichiometry: Vec<(usize, usize, f64)> = (c.model.reactions.iter().enumerate())
        .flat_map(|(j, r)| r.net.iter().map(move |&(i, d)| (j, i, d as f64)))
        .collect();
    let mut t = 0.0;
    let mut events = 0u64;
    let (mut f, mut extra) = (Vec::new(), Vec::new());
    let mut next = 0;
    loop {
        let a0 = buf.eval(c, &x, p, t, n)?;
        if a0 <= 0.0 {
            break;
        }
        let e0: f64 = Exp1.sample(&mut rng);
        let tau = e0 / a0;
        // Observation times crossed before the next event see the current state and tangents.
        while next < times.len() && times[next] < t + tau {
            f.extend(leaves.values(&x, p, times[next]));
            extra.extend(leaves.pathwise(&x, &dx, p, times[next]));
            next += 1;
        }
        if t + tau > o.t_end {
            break;
        }
        if events >= o.max_events {
            return Err(too_many(c, &x, t, o.max_events, n));
        }
        events += 1;
        // Total tangents of the propensities: ∂a/∂θ + ∂a/∂x · dx + ∂a/∂t · dt.
        da.copy_from_slice(&buf.dadp);
        for &(k, i) in &c.pattern.dspecies {
            let g = buf.dadx[k * ns + i];
            let (out, tangent) = (&mut da[k * np..(k + 1) * np], &dx[i * np..(i + 1) * np]);
            for (o, v) in out.iter_mut().zip(tangent) {
                *o += g * v;
            }
        }
        for &k in &c.pattern.dtime {
            for q in 0..np {
                da[k * np + q] += buf.dadt[k] * dt[q];
            }
        }
        // Waiting time τ = E/a0: dτ = -τ da0/a0.
        t += tau;
        // The time tangent only matters where propensities read time: skip it elsewhere.
        if time_dependent {
            let tau_over_a0 = tau / a0;
            for row in da.chunks_exact(np) {
                for (d, v) in dt.iter_mut().zip(row) {
                    *d -= tau_over_a0 * v;
                }
            }
        }
        // Reaction choice: argmax(log a_j + g_j) with Gumbel g_j = -log E_j, i.e. argmax a_j/E_j.
        let mut best = 0;
        let mut best_rate = -1.0;
        for j in 0..nr {
            let e: f64 = Exp1.sample(&mut rng);
            clocks[j] = e;
            let r = buf.a[j] / e;
            if r > best_rate {
                best_rate = r;
                best = j;
            }
        }
        // Tangent of y = softmax((log a + g)/temperature), dz_j = da_j/a_j: at temperature 1,
        // y_j ∝ a_j/E_j and y_j dz_j = (da_j/E_j)/Σ a/E, so no logarithm or exponential is needed.
        if temp == 1.0 {
            // One division per channel, not per (channel, parameter): coef_j = 1/(E_j Σ a/E).
            let mut total = 0.0;
            for j in 0..nr {
                clocks[j] = 1.0 / clocks[j];
                total += buf.a[j] * clocks[j];
            }
            let inv_total = 1.0 / total;
            mean_dz.iter_mut().for_each(|m| *m = 0.0);
            for j in 0..nr {
                // A reaction that cannot fire has y_j = 0 and contributes nothing: its tangent in
                // a-space, da_j/(E_j Σ a/E), is heavy-tailed in 1/E_j and is not taken.
                let coef = if buf.a[j] > 0.0 {
                    clocks[j] * inv_total
                } else {
                    0.0
                };
                clocks[j] = coef;
                let (row, out) = (&da[j * np..(j + 1) * np], &mut dy[j * np..(j + 1) * np]);
                for q in 0..np {
                    let v = row[q] * coef;
                    out[q] = v;
                    mean_dz[q] += v;
                }
            }
            for j in 0..nr {
                let y = buf.a[j] * clocks[j];
                let out = &mut dy[j * np..(j + 1) * np];
                for q in 0..np {
                    out[q] -= y * mean_dz[q];
                }
            }
        } else {
            for j in 0..nr {
                z[j] = if buf.a[j] > 0.0 {
                    (buf.a[j].ln() - clocks[j].ln()) / temp
                } else {
                    f64::NEG_INFINITY
                };
            }
            let zmax = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for j in 0..nr {
                w[j] = (z[j] - zmax).exp();
            }
            let total: f64 = w.iter().sum();
            mean_dz.iter_mut().for_each(|m| *m = 0.0);
            for j in 0..nr {
                let y = w[j] / total;
                for q in 0..np {
                    let dz = if buf.a[j] > 0.0 {
                        da[j * np + q] / buf.a[j]
                    } else {
                        0.0
                    };
                    dy[j * np + q] = dz;
                    mean_dz[q] += y * dz;
                }
            }
            for j in 0..nr {
                let y = w[j] / total;
                for q in 0..np {
                    dy[j * np + q] = y * (dy[j * np + q] - mean_dz[q]) / temp;
                }
            }
        }
        // Straight-through: the state moves by the chosen reaction, its tangent by S·dy.
        for &(j, i, d) in &stoichiometry {
            let (out, row) = (&mut dx[i * np..(i + 1) * np], &dy[j * np..(j + 1) * np]);
            for (o, v) in out.iter_mut().zip(row) {
                *o += d * v;
            }
        }
        apply(c, best, &mut x);
    }
    for &tk in &times[next..] {
        f.extend(leaves.values(&x, p, tk));
        extra.extend(leaves.pathwise(&x, &dx, p, tk));
    }
    Ok(Record { f, extra, events })
}

/// Likelihood ratio. `extra` holds the score (P) and then the leaves' direct derivatives `[m][q]`.
fn score(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    n: usize,
) -> Result<Record, SimError> {
    let np = p.len();
    let mut rng = stream_rng(o.seed, n as u64);
    let mut x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let mut s = vec![0.0; np];
    let mut t = 0.0;
    let mut events = 0u64;
    let (mut f, mut extra) = (Vec::new(), Vec::new());
    let mut next = 0;
    let mut da0 = vec![0.0; np];
    loop {
        let a0 = buf.eval(c, &x, p, t, n)?;
        let tau = if a0 > 0.0 {
            Distribution::<f64>::sample(&Exp1, &mut rng) / a0
        } else {
            f64::INFINITY
        };
        da0.iter_mut().for_each(|v| *v = 0.0);
        for &(k, q) in &c.pattern.dparam {
            da0[q] += buf.dadp[k * np + q];
        }
        // Observation times inside this interval: the score so far, censored at that time.
        while next < times.len() && times[next] < t + tau {
            let tk = times[next];
            extra.extend(s.iter().zip(&da0).map(|(v, d)| v - (tk - t) * d));
            extra.extend(leaves.direct(&x, p, tk));
            f.extend(leaves.values(&x, p, tk));
            next += 1;
        }
        // −∫ ∂a0/∂θ dt over the interval, censored at the horizon.
        // (Per channel, in the same order as `rxnc grad` has always summed it.)
        let interval = tau.min(o.t_end - t);
        for &(k, q) in &c.pattern.dparam {
            s[q] -= interval * buf.dadp[k * np + q];
        }
        if t + tau > o.t_end {
            break;
        }
        if events >= o.max_events {
            return Err(too_many(c, &x, t, o.max_events, n));
        }
        events += 1;
        t += tau;
        let k = select_or_last(&buf.a, rng.random::<f64>() * a0);
        // + ∂ log a_k/∂θ for the reaction that fired.
        for &(j, q) in &c.pattern.dparam {
            if j == k {
                s[q] += buf.dadp[k * np + q] / buf.a[k];
            }
        }
        apply(c, k, &mut x);
    }
    for &tk in &times[next..] {
        // Only reached when the horizon is past the last event: `s` is censored at the horizon.
        extra.extend(s.iter().zip(&da0).map(|(v, d)| v + (o.t_end - tk) * d));
        extra.extend(leaves.direct(&x, p, tk));
        f.extend(leaves.values(&x, p, tk));
    }
    Ok(Record { f, extra, events })
}

/// The uniformised clock's random numbers for tick `i`: counter-based, so that an alternative path
/// branching at tick `i` reuses the primal's randomness from tick `i + 1` on (coupling).
fn tick(key: u64, i: u64) -> (f64, f64) {
    let h1 = crate::engine::splitmix64(key ^ crate::engine::splitmix64(i));
    let h2 = crate::engine::splitmix64(h1);
    let unit = |h: u64| ((h >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    (unit(h1), unit(h2))
}

/// One step of the uniformised clock from `x` at `t`: Some((new time, chosen reaction or None for
/// the no-op)), or None when the horizon or an absorbing state is reached.
fn uniformised_step(
    a: &[f64],
    a0: f64,
    t: f64,
    t_end: f64,
    u: (f64, f64),
) -> Option<(f64, Option<usize>)> {
    if a0 <= 0.0 {
        return None;
    }
    let rate = (1.0 + ALT_PATH_RHO) * a0;
    let t_next = t - u.0.ln() / rate;
    if t_next > t_end {
        return None;
    }
    let r = u.1 * rate;
    Some((
        t_next,
        if r < a0 {
            Some(select_or_last(a, r))
        } else {
            None
        },
    ))
}

/// Where an alternative path leaves the primal: state, time, next tick, sign of its weight.
type Branch = (Vec<i64>, f64, u64, f64);

/// Alternative paths. Per observation time, `extra` holds the leaves' direct derivatives
/// `[m][q]`, the signed weight of each parameter's alternative (P), and each alternative's leaf
/// values `[q][m]` at that time (the primal's before the alternative branches off).
fn alt_path(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    n: usize,
) -> Result<Record, SimError> {
    let (nr, np, nl, nt) = (c.n_reactions(), p.len(), leaves.len(), times.len());
    let key = crate::engine::splitmix64(o.seed) ^ crate::engine::splitmix64(n as u64 ^ ALT_KEY);
    let mut reservoir = stream_rng(o.seed ^ ALT_KEY, n as u64);
    let mut x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let mut mass = vec![0.0; np];
    // Per parameter: the branch state, time, next tick and sign of the chosen alternative.
    let mut branch: Vec<Option<Branch>> = vec![None; np];
    let mut t = 0.0;
    let mut i = 0u64;
    let mut events = 0u64;
    let mut dp = vec![0.0; nr + 1];
    // The primal's states at the observation times.
    let mut states: Vec<Vec<i64>> = Vec::with_capacity(nt);
    loop {
        let a0 = buf.eval(c, &x, p, t, n)?;
        let step = uniformised_step(&buf.a, a0, t, f64::INFINITY, tick(key, i));
        let t_next = step.map_or(f64::INFINITY, |s| s.0);
        while states.len() < nt && times[states.len()] < t_next {
            states.push(x.clone());
        }
        let Some((t_next, choice)) = step.filter(|s| s.0 <= o.t_end) else {
            break;
        };
        i += 1;
        if events >= o.max_events {
            return Err(too_many(c, &x, t, o.max_events, n));
        }
        events += 1;
        t = t_next;
        let rate = (1.0 + ALT_PATH_RHO) * a0;
        let chosen = choice.unwrap_or(nr);
        for q in 0..np {
            // d p_j/dθ for the reactions and the no-op (which takes up the rest).
            let mut total = 0.0;
            for j in 0..nr {
                dp[j] = buf.dadp[j * np + q] / rate;
                total += dp[j];
            }
            dp[nr] = -total;
            let event_mass: f64 = (0..=nr).filter(|&j| j != chosen).map(|j| dp[j].abs()).sum();
            if event_mass <= 0.0 {
                continue;
            }
            mass[q] += event_mass;
            if reservoir.random::<f64>() * mass[q] < event_mass {
                let mut r = reservoir.random::<f64>() * event_mass;
                let mut alt = chosen;
                for j in (0..=nr).filter(|&j| j != chosen) {
                    alt = j;
                    r -= dp[j].abs();
                    if r < 0.0 {
                        break;
                    }
                }
                let mut xa = x.clone();
                if alt < nr {
                    apply(c, alt, &mut xa);
                }
                branch[q] = Some((xa, t, i, dp[alt].signum()));
            }
        }
        if chosen < nr {
            apply(c, chosen, &mut x);
        }
    }
    while states.len() < nt {
        states.push(x.clone());
    }
    let f: Vec<f64> = (0..nt)
        .flat_map(|k| leaves.values(&states[k], p, times[k]))
        .collect();
    // Alternatives' leaf values, `[time][q][m]`, and signed weights.
    let mut alternatives = vec![0.0; nt * np * nl];
    let mut weights = vec![0.0; np];
    for q in 0..np {
        let at = |k: usize| (k * np + q) * nl;
        match branch[q].take() {
            Some((mut xa, mut ta, mut ia, sign)) => {
                let mut k = 0;
                // Before the branch the alternative is the primal.
                while k < nt && times[k] < ta {
                    alternatives[at(k)..at(k) + nl].copy_from_slice(&f[k * nl..(k + 1) * nl]);
                    k += 1;
                }
                let mut a = vec![0.0; nr];
                loop {
                    let a0 = c.propensities(&xa, p, ta, &mut a);
                    if let Some(j) = a.iter().position(|v| !(*v >= 0.0)) {
                        return Err(SimError::InvalidPropensity {
                            reaction: c.model.reactions[j].name.clone(),
                            value: a[j],
                            time: ta,
                            state: named_state(c, &xa),
                            trajectory: n,
                        });
                    }
                    let step = uniformised_step(&a, a0, ta, f64::INFINITY, tick(key, ia));
                    let t_next = step.map_or(f64::INFINITY, |s| s.0);
                    while k < nt && times[k] < t_next {
                        alternatives[at(k)..at(k) + nl]
                            .copy_from_slice(&leaves.values(&xa, p, times[k]));
                        k += 1;
                    }
                    let Some((t_next, choice)) = step.filter(|s| s.0 <= o.t_end) else {
                        break;
                    };
                    ia += 1;
                    events += 1;
                    if events >= o.max_events.saturating_mul(2) {
                        return Err(too_many(c, &xa, ta, o.max_events, n));
                    }
                    ta = t_next;
                    if let Some(j) = choice {
                        apply(c, j, &mut xa);
                    }
                }
                while k < nt {
                    alternatives[at(k)..at(k) + nl]
                        .copy_from_slice(&leaves.values(&xa, p, times[k]));
                    k += 1;
                }
                weights[q] = sign * mass[q];
            }
            None => {
                for k in 0..nt {
                    alternatives[at(k)..at(k) + nl].copy_from_slice(&f[k * nl..(k + 1) * nl]);
                }
            }
        }
    }
    let mut extra = Vec::with_capacity(nt * extra_len(o.estimator, nl, np));
    for k in 0..nt {
        extra.extend(leaves.direct(&states[k], p, times[k]));
        extra.extend(&weights);
        extra.extend(&alternatives[k * np * nl..(k + 1) * np * nl]);
    }
    Ok(Record { f, extra, events })
}

/// Gaussian-smoothed central differences with common random numbers. Per observation time,
/// `extra` holds the leaves at θ + σε and θ − σε (M each) and then ε (P).
#[allow(clippy::too_many_arguments)]
fn finite_differences(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    scales: &[FdScale],
    sigma: f64,
    n: usize,
) -> Result<Record, SimError> {
    let mut noise = stream_rng(o.seed ^ FD_KEY, n as u64);
    let eps: Vec<f64> = (0..p.len())
        .map(|_| StandardNormal.sample(&mut noise))
        .collect();
    let shifted = |sign: f64| -> Vec<f64> {
        p.iter()
            .zip(scales)
            .zip(&eps)
            .map(|((&v, s), &e)| s.perturb(v, sign * sigma * e))
            .collect()
    };
    let stop = AtomicBool::new(false);
    let mut events = 0;
    let ns = c.n_species();
    let mut observed = |params: &[f64]| -> Result<Vec<i64>, SimError> {
        let mut rng = stream_rng(o.seed, n as u64); // common random numbers
        let mut tr = Trajectory::new(c, params, n)?;
        let mut out = vec![0; times.len() * ns];
        tr.run_to(
            times,
            o.t_end,
            o.max_events,
            &mut rng,
            |k, x| out[k * ns..(k + 1) * ns].copy_from_slice(x),
            &stop,
        )?;
        events += tr.events;
        Ok(out)
    };
    let x0 = observed(p)?;
    let (pp, pm) = (shifted(1.0), shifted(-1.0));
    let xp = observed(&pp)?;
    let xm = observed(&pm)?;
    let (mut f, mut extra) = (Vec::new(), Vec::new());
    for (k, &tk) in times.iter().enumerate() {
        let at = |v: &[i64]| v[k * ns..(k + 1) * ns].to_vec();
        f.extend(leaves.values(&at(&x0), p, tk));
        extra.extend(leaves.values(&at(&xp), &pp, tk));
        extra.extend(leaves.values(&at(&xm), &pm, tk));
        extra.extend(&eps);
    }
    Ok(Record { f, extra, events })
}

/// The moments E[f], E[f²] of every leaf and their gradients, from a subset of records.
pub fn moments(
    est: Estimator,
    records: &[&Record],
    nl: usize,
    np: usize,
    fd: &[FdScale],
) -> Vec<LeafMoments> {
    let nn = records.len();
    let count = nn as f64;
    (0..nl)
        .map(|m| {
            let sum1: f64 = records.iter().map(|r| r.f[m]).sum();
            let sum2: f64 = records.iter().map(|r| r.f[m] * r.f[m]).sum();
            let mut d1 = vec![0.0; np];
            let mut d2 = vec![0.0; np];
            for r in records {
                let f = r.f[m];
                match est {
                    Estimator::GsSt { .. } => {
                        for q in 0..np {
                            let df = r.extra[m * np + q];
                            d1[q] += df;
                            d2[q] += 2.0 * f * df;
                        }
                    }
                    Estimator::Score => {
                        // Leave-one-out baselines: independent of this trajectory's score.
                        let b1 = (sum1 - f) / (count - 1.0);
                        let b2 = (sum2 - f * f) / (count - 1.0);
                        for q in 0..np {
                            let s = r.extra[q];
                            let direct = r.extra[np + m * np + q];
                            d1[q] += (f - b1) * s + direct;
                            d2[q] += (f * f - b2) * s + 2.0 * f * direct;
                        }
                    }
                    Estimator::AltPath => {
                        for q in 0..np {
                            let direct = r.extra[m * np + q];
                            let w = r.extra[nl * np + q];
                            let fa = r.extra[nl * np + np + q * nl + m];
                            d1[q] += w * (fa - f) + direct;
                            d2[q] += w * (fa * fa - f * f) + 2.0 * f * direct;
                        }
                    }
                    Estimator::Fd { sigma } => {
                        let (fp, fm) = (r.extra[m], r.extra[nl + m]);
                        for q in 0..np {
                            let e = r.extra[2 * nl + q] * fd[q].to_theta() / (2.0 * sigma);
                            d1[q] += (fp - fm) * e;
                            d2[q] += (fp * fp - fm * fm) * e;
                        }
                    }
                }
            }
            let scale = |v: Vec<f64>| v.into_iter().map(|x| x / count).collect::<Vec<_>>();
            LeafMoments {
                m1: Dual {
                    v: sum1 / count,
                    d: scale(d1),
                },
                m2: Dual {
                    v: sum2 / count,
                    d: scale(d2),
                },
                n: nn,
            }
        })
        .collect()
}
