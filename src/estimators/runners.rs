//! The per-trajectory work of each estimator, and how its records become moments.

use super::{Estimator, GradOptions, LeafMoments, Leaves, Record};
use crate::engine::{
    Shown, SimError, Trajectory, count_overflow, named_state, propensity_failure,
    reactants_missing, stream_rng, too_many_events,
};
use crate::estimators::Dual;
use crate::ir;
use crate::jit::{CompiledModel, DENSE_NET_MAX_SPECIES, GsStFrame, GsStStop};
use rand::Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use std::sync::atomic::AtomicBool;

/// Extra probability mass of the uniformised clock's no-op channel in `alt-path`:
/// the clock runs at `(1 + RHO) a0(x)`.
pub const ALT_PATH_RHO: f64 = 0.25;

/// Keys separating the auxiliary random streams from the trajectories' own.
const FD_KEY: u64 = 0x5EED_0F0D_0000_0001;
const ALT_KEY: u64 = 0x5EED_0A17_0000_0002;

/// How `fd` perturbs a parameter, in the coordinate u the smoothing is Gaussian in: inside
/// bounds `[lo, hi]` in u = logit((θ − lo)/(hi − lo)), so that no perturbation leaves them;
/// otherwise multiplicatively (u = log θ) for positive rates and additively with a width of
/// `max(|θ|, 1)` for the rest.
#[derive(Debug, Clone, Copy)]
pub struct FdScale {
    coordinate: FdCoordinate,
    /// dθ/du at the parameter's value.
    width: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FdCoordinate {
    Log,
    Logit {
        lo: f64,
        hi: f64,
    },
    Additive,
    /// At a bound: not perturbed (a fit steps off it; `rxnc grad` refuses it, see
    /// [`fd_at_a_bound`]), so its derivative comes out 0.
    Held,
}

pub fn fd_scales(model: &ir::Model, params: &[f64]) -> Vec<FdScale> {
    model
        .params
        .iter()
        .zip(params)
        .map(|(p, &v)| match p.bounds {
            Some((lo, hi)) if lo < v && v < hi => {
                let s = (v - lo) / (hi - lo);
                FdScale {
                    coordinate: FdCoordinate::Logit { lo, hi },
                    width: (hi - lo) * s * (1.0 - s),
                }
            }
            Some(_) => FdScale {
                coordinate: FdCoordinate::Held,
                width: f64::INFINITY,
            },
            _ if v > 0.0 && p.bounds.is_none_or(|(lo, _)| lo >= 0.0) => FdScale {
                coordinate: FdCoordinate::Log,
                width: v,
            },
            _ => FdScale {
                coordinate: FdCoordinate::Additive,
                width: v.abs().max(1.0),
            },
        })
        .collect()
}

/// A parameter `fd` cannot perturb without leaving its bounds: one at a bound. The message
/// names it.
pub fn fd_at_a_bound(model: &ir::Model, params: &[f64]) -> Option<String> {
    let (p, v) = (model.params.iter().zip(params))
        .find(|(p, v)| p.bounds.is_some_and(|(lo, hi)| **v <= lo || **v >= hi))?;
    let (lo, hi) = p.bounds?;
    Some(format!(
        "fd cannot differentiate with respect to `{}` = {} at a bound of [{}, {}]: every \
         perturbation on one side leaves the bounds; move its value inside them, or use \
         another estimator",
        p.name,
        Shown(*v),
        Shown(lo),
        Shown(hi)
    ))
}

impl FdScale {
    fn perturb(&self, v: f64, delta: f64) -> f64 {
        match self.coordinate {
            FdCoordinate::Log => v * delta.exp(),
            FdCoordinate::Logit { lo, hi } => {
                let s = (v - lo) / (hi - lo);
                let u = (s / (1.0 - s)).ln() + delta;
                lo + (hi - lo) / (1.0 + (-u).exp())
            }
            FdCoordinate::Additive => v + self.width * delta,
            FdCoordinate::Held => v,
        }
    }
    /// du/dθ: converts a derivative in the perturbation coordinate to one in θ.
    pub fn to_theta(self) -> f64 {
        1.0 / self.width
    }
}

/// Reactions whose propensity is 0 at the initial state while its derivative with respect to a
/// parameter is not, where the estimator cannot see them: gs-st and score follow only reactions
/// that fire (GS-ST's softmax weight and the likelihood ratio are 0 or singular there), alt-path
/// only while some reaction can fire. A parameter at the edge of its range (a probability of 0)
/// then gets a derivative of 0 ± 0. One warning per parameter.
pub fn unseen_reactions(c: &CompiledModel, params: &[f64], est: Estimator) -> Vec<(usize, String)> {
    if matches!(est, Estimator::Fd { .. }) || !c.kernels().partials {
        return Vec::new();
    }
    let x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let a0 = buf.eval_unchecked(c, &x, params, 0.0);
    if matches!(est, Estimator::AltPath) && a0 > 0.0 {
        return Vec::new();
    }
    let np = params.len();
    let mut warned = vec![false; np];
    let mut warnings = Vec::new();
    for &(j, q) in &c.pattern.dparam {
        let d = buf.dadp[j * np + q];
        if buf.a[j] == 0.0 && d != 0.0 && d.is_finite() && !warned[q] {
            warned[q] = true;
            let param = &c.model.params[q];
            let instead = match param.bounds {
                Some((lo, hi)) if params[q] <= lo || params[q] >= hi => format!(
                    "move `{}` inside its bounds [{}, {}] and use --estimator fd",
                    param.name,
                    Shown(lo),
                    Shown(hi)
                ),
                _ => "--estimator fd does not".to_string(),
            };
            warnings.push((
                q,
                format!(
                    "reaction `{}` cannot fire at the initial state (propensity 0) although its \
                 propensity's derivative with respect to `{}` is {}: {} sees only reactions that \
                 fire, so d/d{} misses its effect while it cannot; {instead}",
                    c.model.reactions[j].name,
                    param.name,
                    Shown(d),
                    est.name(),
                    param.name
                ),
            ));
        }
    }
    warnings
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
    /// The kernel alone: the caller checks the propensities.
    #[inline(always)]
    fn eval_unchecked(&mut self, c: &CompiledModel, x: &[i64], p: &[f64], t: f64) -> f64 {
        c.partials(
            x,
            p,
            t,
            &mut self.a,
            &mut self.dadp,
            &mut self.dadx,
            &mut self.dadt,
        )
    }
    /// The kernel, with the full checks of [`Partials::eval`] only under [`Checks::EveryEvent`]
    /// or when a propensity is negative or NaN or their sum is not finite (cheap tests): the
    /// derivatives are then checked where the estimator records what it carries.
    #[inline(always)]
    fn eval_checked_by(
        &mut self,
        checks: Checks,
        c: &CompiledModel,
        x: &[i64],
        p: &[f64],
        t: f64,
        index: usize,
    ) -> Result<f64, SimError> {
        let a0 = self.eval_unchecked(c, x, p, t);
        let bad = self
            .a
            .iter()
            .fold(!(a0 < f64::INFINITY), |bad, &a| bad | !(a >= 0.0));
        if checks == Checks::EveryEvent || bad {
            // Names the offending reaction and derivative.
            return self.eval(c, x, p, t, index);
        }
        Ok(a0)
    }
    /// The kernel, then a diagnostic for propensities that cannot drive a simulation (see
    /// [`propensity_failure`]) or a non-finite derivative.
    // Out of line: it runs only on a bad propensity, and kept apart it leaves the hot loops short.
    #[cold]
    #[inline(never)]
    fn eval(
        &mut self,
        c: &CompiledModel,
        x: &[i64],
        p: &[f64],
        t: f64,
        index: usize,
    ) -> Result<f64, SimError> {
        let a0 = self.eval_unchecked(c, x, p, t);
        if let Some(e) = propensity_failure(&c.model, x, &self.a, t, index) {
            return Err(e);
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
            let name = &c.model.params[q].name;
            return Err(non_finite_derivative(
                c,
                k,
                name,
                self.dadp[k * np + q],
                x,
                t,
                index,
            ));
        }
        Ok(a0)
    }
}

/// Reaction `k`'s derivative with respect to `wrt` (a parameter or a species) is `value`, not
/// finite.
#[cold]
#[inline(never)]
fn non_finite_derivative(
    c: &CompiledModel,
    k: usize,
    wrt: &str,
    value: f64,
    x: &[i64],
    t: f64,
    n: usize,
) -> SimError {
    SimError::NonFiniteDerivative {
        reaction: c.model.reactions[k].name.clone(),
        param: wrt.to_string(),
        value,
        time: t,
        state: named_state(&c.model, x),
        trajectory: n,
    }
}

#[cold]
#[inline(never)]
fn too_many(c: &CompiledModel, x: &[i64], t: f64, limit: u64, index: usize) -> SimError {
    too_many_events(&c.model, x, limit, t, index)
}

/// Fires reaction `j` at time `t`: applies its net change to `x` (a count passing 2^63 - 1
/// wraps around, and is reported where the state is recorded, as the engine does), then stops
/// a full propensity that fired without its reactants.
#[inline(always)]
fn fire(c: &CompiledModel, j: usize, x: &mut [i64], t: f64, n: usize) -> Result<(), SimError> {
    let reaction = &c.model.reactions[j];
    for &(i, d) in &reaction.net {
        x[i] = x[i].wrapping_add(d);
    }
    check_reactants(c, j, x, t, n)
}

/// After reaction `j` fired into `x`: only a full propensity (`@=`) can fire without its
/// reactants; mass action vanishes then. A negative count it consumes is its doing, or one that
/// had wrapped around past 2^63 - 1 (as the compiled event loop reports it).
#[inline(always)]
fn check_reactants(
    c: &CompiledModel,
    j: usize,
    x: &[i64],
    t: f64,
    n: usize,
) -> Result<(), SimError> {
    let reaction = &c.model.reactions[j];
    if reaction.law != ir::RateLaw::Full {
        return Ok(());
    }
    if reaction.net.iter().any(|&(i, d)| d < 0 && x[i] < 0) {
        return Err(negative_count(c, j, x, t, n));
    }
    Ok(())
}

/// The error for a negative count after reaction `j` fired.
#[cold]
#[inline(never)]
fn negative_count(c: &CompiledModel, j: usize, x: &[i64], t: f64, n: usize) -> SimError {
    reactants_missing(&c.model, j, x, t, n)
        .or_else(|| count_overflow(&c.model, x, t, n))
        .expect("a count is negative")
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

/// What every trajectory of an ensemble shares, prepared once.
pub struct Shared {
    /// How `fd` perturbs each parameter.
    pub fd: Vec<FdScale>,
    gs_st: GsStLayout,
}

impl Shared {
    /// Prepares what the estimators need for `c` at the parameter values `params`.
    pub fn new(c: &CompiledModel, params: &[f64]) -> Shared {
        Shared {
            fd: fd_scales(&c.model, params),
            gs_st: GsStLayout::new(c),
        }
    }
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
    shared: &Shared,
    n: usize,
) -> Result<Record, SimError> {
    let fd = &shared.fd[..];
    match o.estimator {
        Estimator::GsSt { temperature } => {
            gs_st(c, p, leaves, times, o, &shared.gs_st, temperature, n)
        }
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
#[allow(clippy::too_many_arguments)]
fn gs_st(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    layout: &GsStLayout,
    temp: f64,
    n: usize,
) -> Result<Record, SimError> {
    checked_by_replay(|checks| {
        if checks == Checks::AtRecords && temp == 1.0 && c.has_gs_st_events() {
            gs_st_trajectory_compiled(c, p, leaves, times, o, layout, n)
        } else {
            gs_st_trajectory(c, p, leaves, times, o, layout, temp, n, checks)
        }
    })
}

/// Events whose exponential draws are made at a time for the compiled event loop: enough to
/// amortise a call, few enough that the draws left unused at the end of a trajectory (they come
/// from its own stream, so they change nothing) cost little.
const DRAWN_EVENTS: usize = 16;

/// One GS-ST trajectory at temperature 1 through the compiled event loop
/// ([`CompiledModel::gs_st_events_unchecked`]): the same trajectory, records and errors as
/// [`gs_st_trajectory`] under [`Checks::AtRecords`], bit for bit. Rust draws the exponentials
/// (the same draws, in the same order) and records the observations.
fn gs_st_trajectory_compiled(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    layout: &GsStLayout,
    n: usize,
) -> Result<Record, SimError> {
    assert_eq!(p.len(), c.model.params.len(), "one value per parameter");
    let (nr, ns, np) = (c.n_reactions(), c.n_species(), p.len());
    let mut rng = stream_rng(o.seed, n as u64);
    let mut x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let mut dx = vec![0.0; ns * np];
    let (mut coef, mut r) = (vec![0.0; nr], vec![0.0; nr]);
    let mut draws = vec![0.0; DRAWN_EVENTS * (nr + 1)];
    let (mut f, mut extra) = (Vec::new(), Vec::new());
    let mut next = 0;
    let observation = |next: usize| times.get(next).copied().unwrap_or(f64::INFINITY);
    let a0 = buf.eval_checked_by(Checks::AtRecords, c, &x, p, 0.0, n)?;
    // The buffers are pointed at before every call (below).
    let mut frame = GsStFrame {
        p: p.as_ptr(),
        net: (layout.dense_net.as_ref()).map_or(std::ptr::null(), |net| net.as_ptr()),
        a0,
        t_obs: observation(0),
        t_end: o.t_end,
        max_events: o.max_events,
        ..GsStFrame::EMPTY
    };
    if a0 > 0.0 {
        loop {
            (frame.x, frame.dx, frame.draws) = (x.as_mut_ptr(), dx.as_mut_ptr(), draws.as_ptr());
            (frame.a, frame.dadp, frame.dadx) = (
                buf.a.as_mut_ptr(),
                buf.dadp.as_mut_ptr(),
                buf.dadx.as_mut_ptr(),
            );
            (frame.coef, frame.r) = (coef.as_mut_ptr(), r.as_mut_ptr());
            // SAFETY: the frame points at the buffers above, sized for `c` and never resized;
            // `buf` holds the partials at `x` and `frame.a0` their sum.
            match unsafe { c.gs_st_events_unchecked(&mut frame) } {
                GsStStop::NeedDraws => {
                    // E_0, then 1/E_j, as the Rust loop computes them.
                    for event in draws.chunks_exact_mut(nr + 1) {
                        event[0] = Exp1.sample(&mut rng);
                        for e in &mut event[1..] {
                            let draw: f64 = Exp1.sample(&mut rng);
                            *e = 1.0 / draw;
                        }
                    }
                    (frame.next_draw, frame.n_draws) = (0, DRAWN_EVENTS as u64);
                }
                GsStStop::Observation => {
                    while next < times.len() && times[next] < frame.t_next {
                        record_pathwise(c, leaves, &x, &dx, p, times[next], n, &mut f, &mut extra)?;
                        next += 1;
                    }
                    frame.t_obs = observation(next);
                }
                GsStStop::Horizon | GsStStop::Absorbed => break,
                GsStStop::TooManyEvents => {
                    return Err(too_many(c, &x, frame.t, o.max_events, n));
                }
                GsStStop::NegativeCount => {
                    return Err(negative_count(c, frame.fired as usize, &x, frame.t, n));
                }
                GsStStop::InvalidPropensity => {
                    // Names the offending reaction (as the Rust loop's next event would).
                    frame.a0 = buf.eval(c, &x, p, frame.t, n)?;
                    if frame.a0 <= 0.0 {
                        break;
                    }
                }
            }
        }
    }
    for &tk in &times[next..] {
        record_pathwise(c, leaves, &x, &dx, p, tk, n, &mut f, &mut extra)?;
    }
    Ok(Record {
        f,
        extra,
        events: frame.events,
    })
}

/// Where an estimator checks that what it carries along the trajectory (GS-ST's state tangent,
/// the score) and the partial derivatives feeding it are finite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Where it is recorded (cheap; a failure is then located by a replay).
    AtRecords,
    /// After every event, naming the derivative that made it non-finite.
    EveryEvent,
}

/// Runs a trajectory with [`Checks::AtRecords`]; a non-finite result is rare, and then the same
/// trajectory (same random stream) is replayed with [`Checks::EveryEvent`] to name the derivative
/// that caused it.
fn checked_by_replay(
    trajectory: impl Fn(Checks) -> Result<Record, SimError>,
) -> Result<Record, SimError> {
    match trajectory(Checks::AtRecords) {
        Err(SimError::TangentOverflow { .. }) => trajectory(Checks::EveryEvent),
        other => other,
    }
}

/// What GS-ST prepares once per ensemble.
struct GsStLayout {
    /// The reactions' net changes as dense columns, `[j][i]`, for models with few species (see
    /// [`DENSE_NET_MAX_SPECIES`]).
    dense_net: Option<Vec<i64>>,
    /// The species some full propensity consumes: with dense columns they are checked after
    /// every event, whichever reaction fired, as the compiled event loop does.
    guarded: Vec<usize>,
}

impl GsStLayout {
    fn new(c: &CompiledModel) -> Self {
        let ns = c.n_species();
        let dense_net = (ns <= DENSE_NET_MAX_SPECIES).then(|| {
            let mut dense = vec![0; c.n_reactions() * ns];
            for (j, reaction) in c.model.reactions.iter().enumerate() {
                for &(i, d) in &reaction.net {
                    dense[j * ns + i] = d;
                }
            }
            dense
        });
        let guarded = (0..ns)
            .filter(|&i| c.model.full_propensity_consumes(i))
            .collect();
        GsStLayout { dense_net, guarded }
    }

    /// Fires reaction `j` at time `t` (see [`fire`]).
    #[inline(always)]
    fn fire(
        &self,
        c: &CompiledModel,
        j: usize,
        x: &mut [i64],
        t: f64,
        n: usize,
    ) -> Result<(), SimError> {
        match &self.dense_net {
            Some(dense) => {
                let ns = x.len();
                for (xi, d) in x.iter_mut().zip(&dense[j * ns..(j + 1) * ns]) {
                    *xi = xi.wrapping_add(*d);
                }
                if self.guarded.iter().any(|&i| x[i] < 0) {
                    return Err(negative_count(c, j, x, t, n));
                }
                Ok(())
            }
            None => fire(c, j, x, t, n),
        }
    }
}

/// One GS-ST trajectory.
#[allow(clippy::too_many_arguments)]
fn gs_st_trajectory(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    layout: &GsStLayout,
    temp: f64,
    n: usize,
    checks: Checks,
) -> Result<Record, SimError> {
    let np = p.len();
    assert_eq!(np, c.model.params.len(), "one value per parameter");
    // Checked by `estimate_gradient`: the tangent below has no time component.
    debug_assert!(c.pattern.dtime.is_empty());
    let (nr, ns) = (c.n_reactions(), c.n_species());
    let mut rng = stream_rng(o.seed, n as u64);
    let mut x = c.model.initial_state();
    let mut buf = Partials::new(c);
    let mut dx = vec![0.0; ns * np];
    // Per reaction: r_j = a_j/E_j (the Gumbel-perturbed weight before normalisation) and the
    // coefficient of its tangent (below).
    let mut r = vec![0.0; nr];
    let mut coef = vec![0.0; nr];
    let mut v = vec![0.0; nr * np];
    let mut w = vec![0.0; np];
    let mut spread = vec![0.0; ns];
    let mut t = 0.0;
    let mut events = 0u64;
    let (mut f, mut extra) = (Vec::new(), Vec::new());
    let mut next = 0;
    loop {
        let a0 = buf.eval_checked_by(checks, c, &x, p, t, n)?;
        if a0 <= 0.0 {
            break;
        }
        let e0: f64 = Exp1.sample(&mut rng);
        let tau = e0 / a0;
        // Observation times crossed before the next event see the current state and tangents.
        while next < times.len() && times[next] < t + tau {
            record_pathwise(c, leaves, &x, &dx, p, times[next], n, &mut f, &mut extra)?;
            next += 1;
        }
        if t + tau > o.t_end {
            break;
        }
        if events >= o.max_events {
            return Err(too_many(c, &x, t, o.max_events, n));
        }
        events += 1;
        t += tau;
        // Reaction choice: argmax(log a_j + g_j) with Gumbel g_j = -log E_j, i.e. argmax a_j/E_j.
        for e in coef.iter_mut() {
            *e = Exp1.sample(&mut rng);
        }
        let (mut best, mut best_rate, mut total) = (0, -1.0, 0.0);
        for j in 0..nr {
            let inv_e = 1.0 / coef[j];
            let rj = buf.a[j] * inv_e;
            // A reaction that cannot fire has y_j = 0 and contributes nothing: its tangent in
            // a-space, da_j/(E_j Σ a/E), is heavy-tailed in 1/E_j and is not taken.
            coef[j] = if buf.a[j] > 0.0 { inv_e } else { 0.0 };
            r[j] = rj;
            total += rj;
            let better = rj > best_rate;
            best = if better { j } else { best };
            best_rate = if better { rj } else { best_rate };
        }
        // The tangent of y = softmax((log a + g)/temperature) is dy_j = u_j - y_j Σ_k u_k with
        // u_j = y_j da_j/(temperature a_j). At temperature 1, y_j = r_j/Σr and
        // u_j = (da_j/E_j)/Σr: no logarithm or exponential, and the division by Σr is left to
        // the end (`scale`), off the critical path.
        let scale = if temp == 1.0 {
            1.0 / total
        } else {
            softmax_at_temperature(&buf.a, temp, &mut r, &mut coef);
            1.0
        };
        layout.fire(c, best, &mut x, t, n)?;
        if c.has_gs_st_tangent() {
            // SAFETY: `buf` was sized for `c` by `Partials::new`, `coef` and `r` have a value per
            // reaction and `dx` one per (species, parameter), all allocated above, never resized.
            unsafe { c.gs_st_tangent_unchecked(&buf.dadp, &buf.dadx, &coef, &r, scale, &mut dx) };
        } else {
            tangent_update(
                c,
                &buf,
                &coef,
                &r,
                scale,
                &mut dx,
                &mut v,
                &mut w,
                &mut spread,
            );
        }
        if checks == Checks::EveryEvent && dx.iter().any(|v| !v.is_finite()) {
            return Err(non_finite_state_tangent(c, &buf, &x, t, n));
        }
    }
    for &tk in &times[next..] {
        record_pathwise(c, leaves, &x, &dx, p, tk, n, &mut f, &mut extra)?;
    }
    Ok(Record { f, extra, events })
}

/// What made GS-ST's state tangent non-finite at an event (checked after every event):
/// `eval` has checked ∂a/∂θ there; the tangent also reads ∂a/∂x.
#[cold]
#[inline(never)]
fn non_finite_state_tangent(
    c: &CompiledModel,
    buf: &Partials,
    x: &[i64],
    t: f64,
    n: usize,
) -> SimError {
    let ns = c.n_species();
    let bad = (c.pattern.dspecies.iter()).find(|&&(k, i)| !buf.dadx[k * ns + i].is_finite());
    match bad {
        Some(&(k, i)) => {
            let name = &c.model.species[i].name;
            non_finite_derivative(c, k, name, buf.dadx[k * ns + i], x, t, n)
        }
        None => non_finite_tangent(c, x, t, n),
    }
}

/// GS-ST's state-tangent update for one event, in loops (the JIT's unrolled kernel,
/// [`CompiledModel::gs_st_tangent`], does the same operations in the same order): with
/// `v_j = (scale coef_j) (∂a_j/∂θ + Σ_i ∂a_j/∂x_i dx_i)` and `w = Σ_j v_j`, adds
/// `Σ_j S_ij (v_j - scale r_j w)` to `dx_i`.
#[allow(clippy::too_many_arguments)]
fn tangent_update(
    c: &CompiledModel,
    buf: &Partials,
    coef: &[f64],
    r: &[f64],
    scale: f64,
    dx: &mut [f64],
    v: &mut [f64],
    w: &mut [f64],
    spread: &mut [f64],
) {
    let np = w.len();
    let ns = dx.len() / np;
    w.iter_mut().for_each(|x| *x = 0.0);
    for (j, &cj) in coef.iter().enumerate() {
        let cj = cj * scale;
        let vj = &mut v[j * np..(j + 1) * np];
        vj.copy_from_slice(&buf.dadp[j * np..(j + 1) * np]);
        for &(_, i) in c.pattern.dspecies_of(j) {
            let g = buf.dadx[j * ns + i];
            for (x, d) in vj.iter_mut().zip(&dx[i * np..(i + 1) * np]) {
                *x += g * d;
            }
        }
        for (x, wq) in vj.iter_mut().zip(w.iter_mut()) {
            *x *= cj;
            *wq += *x;
        }
    }
    // Σ_j S_ij (v_j - scale r_j w) as Σ_j S_ij v_j - (Σ_j S_ij scale r_j) w: the second sum is a
    // scalar per species.
    spread.iter_mut().for_each(|x| *x = 0.0);
    for (j, &rj) in r.iter().enumerate() {
        let yj = rj * scale;
        let vj = &v[j * np..(j + 1) * np];
        for &(i, d) in &c.model.reactions[j].net {
            spread[i] = stoichiometric_step(spread[i], d, yj);
            for (x, vq) in dx[i * np..(i + 1) * np].iter_mut().zip(vj) {
                *x = stoichiometric_step(*x, d, *vq);
            }
        }
    }
    for (row, &si) in dx.chunks_exact_mut(np).zip(spread.iter()) {
        for (x, wq) in row.iter_mut().zip(w.iter()) {
            *x -= si * wq;
        }
    }
}

/// `acc + d v` for a stoichiometric coefficient `d`: for ±1 (the common case) an addition or a
/// subtraction, which the JIT's kernel also emits instead of a multiplication.
#[inline(always)]
fn stoichiometric_step(acc: f64, d: i64, v: f64) -> f64 {
    match d {
        1 => acc + v,
        -1 => acc - v,
        _ => acc + d as f64 * v,
    }
}

/// y = softmax((log a - log E)/temperature) from `y` = a/E, and c_j = y_j/(temperature a_j)
/// (0 where a_j = 0), written over `y` and `coef`.
fn softmax_at_temperature(a: &[f64], temp: f64, y: &mut [f64], coef: &mut [f64]) {
    let mut zmax = f64::NEG_INFINITY;
    for v in y.iter_mut() {
        *v = if *v > 0.0 {
            v.ln() / temp
        } else {
            f64::NEG_INFINITY
        };
        zmax = zmax.max(*v);
    }
    let mut total = 0.0;
    for v in y.iter_mut() {
        *v = (*v - zmax).exp();
        total += *v;
    }
    for ((v, cj), &aj) in y.iter_mut().zip(coef.iter_mut()).zip(a) {
        *v /= total;
        *cj = if aj > 0.0 { *v / (temp * aj) } else { 0.0 };
    }
}

/// Records the leaves and their pathwise derivatives at time `tk`; a non-finite derivative is
/// reported (the caller replays the trajectory to locate it).
#[allow(clippy::too_many_arguments)]
fn record_pathwise(
    c: &CompiledModel,
    leaves: &Leaves,
    x: &[i64],
    dx: &[f64],
    p: &[f64],
    tk: f64,
    n: usize,
    f: &mut Vec<f64>,
    extra: &mut Vec<f64>,
) -> Result<(), SimError> {
    if let Some(e) = count_overflow(&c.model, x, tk, n) {
        return Err(e);
    }
    if dx.iter().any(|v| !v.is_finite()) {
        return Err(non_finite_tangent(c, x, tk, n));
    }
    f.extend(leaves.values(x, p, tk));
    extra.extend(leaves.pathwise(x, dx, p, tk));
    Ok(())
}

#[cold]
#[inline(never)]
fn non_finite_tangent(c: &CompiledModel, x: &[i64], t: f64, n: usize) -> SimError {
    SimError::TangentOverflow {
        time: t,
        state: named_state(&c.model, x),
        trajectory: n,
    }
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
    checked_by_replay(|checks| score_trajectory(c, p, leaves, times, o, n, checks))
}

/// One score-function trajectory.
#[allow(clippy::too_many_arguments)]
fn score_trajectory(
    c: &CompiledModel,
    p: &[f64],
    leaves: &Leaves,
    times: &[f64],
    o: &GradOptions,
    n: usize,
    checks: Checks,
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
    // ∂a0/∂θ, needed only where the score is recorded.
    let total_derivative = |buf: &Partials| {
        let mut da0 = vec![0.0; np];
        for &(k, q) in &c.pattern.dparam {
            da0[q] += buf.dadp[k * np + q];
        }
        da0
    };
    // The score censored at `tk`, the leaves' direct derivatives and values there.
    let record = |x: &[i64], censored: &dyn Fn(usize) -> f64, tk: f64| {
        if let Some(e) = count_overflow(&c.model, x, tk, n) {
            return Err(e);
        }
        let censored: Vec<f64> = (0..np).map(censored).collect();
        if censored.iter().any(|v| !v.is_finite()) {
            return Err(non_finite_tangent(c, x, tk, n));
        }
        Ok((censored, leaves.direct(x, p, tk), leaves.values(x, p, tk)))
    };
    loop {
        let a0 = buf.eval_checked_by(checks, c, &x, p, t, n)?;
        let tau = if a0 > 0.0 {
            Distribution::<f64>::sample(&Exp1, &mut rng) / a0
        } else {
            f64::INFINITY
        };
        // Observation times inside this interval: the score so far, censored at that time.
        if next < times.len() && times[next] < t + tau {
            let da0 = total_derivative(&buf);
            while next < times.len() && times[next] < t + tau {
                let tk = times[next];
                let (score, direct, values) = record(&x, &|q| s[q] - (tk - t) * da0[q], tk)?;
                extra.extend(score);
                extra.extend(direct);
                f.extend(values);
                next += 1;
            }
        }
        // −∫ ∂a0/∂θ dt over the interval, censored at the horizon.
        // (Per channel, in the same order as `rxnc grad` has always summed it.)
        let interval = tau.min(o.t_end - t);
        for &(k, q) in &c.pattern.dparam {
            s[q] -= interval * buf.dadp[k * np + q];
        }
        if t + tau > o.t_end {
            if next < times.len() {
                // Only when the horizon is past the last event: `s` is censored at the horizon.
                let da0 = total_derivative(&buf);
                for &tk in &times[next..] {
                    let (score, direct, values) =
                        record(&x, &|q| s[q] + (o.t_end - tk) * da0[q], tk)?;
                    extra.extend(score);
                    extra.extend(direct);
                    f.extend(values);
                }
            }
            return Ok(Record { f, extra, events });
        }
        if events >= o.max_events {
            return Err(too_many(c, &x, t, o.max_events, n));
        }
        events += 1;
        t += tau;
        let k = select_or_last(&buf.a, rng.random::<f64>() * a0);
        // + ∂ log a_k/∂θ for the reaction that fired.
        for &(_, q) in c.pattern.dparam_of(k) {
            s[q] += buf.dadp[k * np + q] / buf.a[k];
        }
        fire(c, k, &mut x, t, n)?;
        if checks == Checks::EveryEvent && s.iter().any(|v| !v.is_finite()) {
            return Err(non_finite_tangent(c, &x, t, n));
        }
    }
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
                    fire(c, alt, &mut xa, t, n)?;
                }
                branch[q] = Some((xa, t, i, dp[alt].signum()));
            }
        }
        if chosen < nr {
            fire(c, chosen, &mut x, t, n)?;
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
                    if let Some(e) = propensity_failure(&c.model, &xa, &a, ta, n) {
                        return Err(e);
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
                        fire(c, j, &mut xa, ta, n)?;
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

/// Sums over trajectories from which the moments E\[f\], E\[f²\] of every leaf and their
/// gradients follow ([`MomentSums::moments`]). They are additive, so a jackknife replicate (all
/// trajectories but one group) is the total minus the group's sums: one pass over the records
/// instead of one per replicate.
#[derive(Debug, Clone)]
pub struct MomentSums {
    est: Estimator,
    np: usize,
    count: usize,
    /// Per leaf, a value it takes (the same in every set of sums that are merged): the sums are of
    /// f − c, so that the variance does not come out of E\[f²\] − E\[f\]², which cancels
    /// catastrophically when the mean is large against the sd (counts of 10^9: a variance of 3
    /// came out as −256).
    shift: Vec<f64>,
    /// Per leaf, `LEAF_BLOCK(np)` values, of f' = f − c: Σf', Σf'², then per parameter Σ g1, Σ g2
    /// (the estimator's contributions to the gradients of E\[f'\] and E\[f'²\]) and, for the
    /// score estimator, Σ f' s and Σ f'² s.
    leaf: Vec<f64>,
    /// Σ s per parameter (score estimator only).
    score: Vec<f64>,
}

const fn leaf_block(np: usize) -> usize {
    2 + 4 * np
}

impl MomentSums {
    /// Zero sums for `nl` leaves and `np` parameters, of the leaves less `shift` (one value per
    /// leaf, for example the first trajectory's: any constant gives the same moments, one near
    /// the mean the most precise).
    pub fn new(est: Estimator, np: usize, shift: &[f64]) -> MomentSums {
        let nl = shift.len();
        MomentSums {
            est,
            np,
            count: 0,
            shift: shift.to_vec(),
            leaf: vec![0.0; nl * leaf_block(np)],
            score: vec![0.0; np],
        }
    }

    /// Adds one trajectory's record. `fd` as given by [`Shared`] (finite differences only).
    pub fn add(&mut self, r: &Record, fd: &[FdScale]) {
        let np = self.np;
        let nl = self.leaf.len() / leaf_block(np);
        self.count += 1;
        if matches!(self.est, Estimator::Score) {
            for (acc, s) in self.score.iter_mut().zip(&r.extra[..np]) {
                *acc += s;
            }
        }
        for (m, block) in self.leaf.chunks_exact_mut(leaf_block(np)).enumerate() {
            let c = self.shift[m];
            let f = r.f[m] - c;
            block[0] += f;
            block[1] += f * f;
            let (g1, rest) = block[2..].split_at_mut(np);
            let (g2, rest) = rest.split_at_mut(np);
            let (h1, h2) = rest.split_at_mut(np);
            for q in 0..np {
                let (d1, d2) = match self.est {
                    Estimator::GsSt { .. } => {
                        let df = r.extra[m * np + q];
                        (df, 2.0 * f * df)
                    }
                    Estimator::Score => {
                        let s = r.extra[q];
                        let direct = r.extra[np + m * np + q];
                        h1[q] += f * s;
                        h2[q] += f * f * s;
                        (direct, 2.0 * f * direct)
                    }
                    Estimator::AltPath => {
                        let direct = r.extra[m * np + q];
                        let w = r.extra[nl * np + q];
                        let fa = r.extra[nl * np + np + q * nl + m] - c;
                        (
                            w * (fa - f) + direct,
                            w * (fa * fa - f * f) + 2.0 * f * direct,
                        )
                    }
                    Estimator::Fd { sigma } => {
                        let (fp, fm) = (r.extra[m] - c, r.extra[nl + m] - c);
                        let e = r.extra[2 * nl + q] * fd[q].to_theta() / (2.0 * sigma);
                        ((fp - fm) * e, (fp * fp - fm * fm) * e)
                    }
                };
                g1[q] += d1;
                g2[q] += d2;
            }
        }
    }

    /// Adds the sums of another set of trajectories.
    pub fn merge(&mut self, other: &MomentSums) {
        assert_eq!(self.shift, other.shift, "sums of leaves shifted alike");
        self.count += other.count;
        for (a, b) in self.leaf.iter_mut().zip(&other.leaf) {
            *a += b;
        }
        for (a, b) in self.score.iter_mut().zip(&other.score) {
            *a += b;
        }
    }

    /// The sums of these trajectories without those of `part` (a subset of them).
    pub fn without(&self, part: &MomentSums) -> MomentSums {
        let minus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a - b).collect();
        assert_eq!(self.shift, part.shift, "sums of leaves shifted alike");
        MomentSums {
            est: self.est,
            np: self.np,
            count: self.count - part.count,
            shift: self.shift.clone(),
            leaf: minus(&self.leaf, &part.leaf),
            score: minus(&self.score, &part.score),
        }
    }

    /// The moments of every leaf and their gradients.
    ///
    /// The score estimator's baseline is leave-one-out: trajectory r's score is weighted by
    /// `f_r - (Σf - f_r)/(N - 1)`, which sums to `(N Σ f s - Σf Σ s)/(N - 1)` (the same for f and
    /// f − c).
    pub fn moments(&self) -> Vec<LeafMoments> {
        let np = self.np;
        let count = self.count as f64;
        (self.leaf.chunks_exact(leaf_block(np)).zip(&self.shift))
            .map(|(block, &shift)| {
                let (sum1, sum2) = (block[0], block[1]);
                let (g1, rest) = block[2..].split_at(np);
                let (g2, rest) = rest.split_at(np);
                let (h1, h2) = rest.split_at(np);
                let gradient = |g: &[f64], h: &[f64], sum: f64| -> Vec<f64> {
                    (0..np)
                        .map(|q| {
                            let baselined = if matches!(self.est, Estimator::Score) {
                                (count * h[q] - sum * self.score[q]) / (count - 1.0)
                            } else {
                                0.0
                            };
                            (g[q] + baselined) / count
                        })
                        .collect()
                };
                LeafMoments {
                    m1: Dual {
                        v: shift + sum1 / count,
                        d: gradient(g1, h1, sum1),
                    },
                    m2: Dual {
                        v: sum2 / count,
                        d: gradient(g2, h2, sum2),
                    },
                    shift,
                    n: self.count,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Models of every shape the tangent kernel meets: higher-order mass action, full rate laws
    /// with Hill functions and divisions, reactions with no parameter, odd and even numbers of
    /// parameters (the kernel works in pairs), catalytic reactions with an empty net change.
    const TANGENT_MODELS: [&str; 6] = [
        include_str!("../../examples/michaelis_menten.rxn"),
        include_str!("../../examples/autorepressor.rxn"),
        include_str!("../../examples/lotka_volterra.rxn"),
        "species A = 30, B = 4\nparam k1 = 0.2, k2 = 1.5\nconst c = 2\n\
         2A -> B @ k1\nB -> 2A @ k2\n3A -> 2A + B @ c\nA + B -> A + B @ k1\n",
        "species X = 5, Y = 2\nparam a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9\n\
         0 -> X @= a * hill(Y, b, c) + d / (1 + e * X)\nX -> Y @ f\nY -> 0 @= g * Y^2 / (h + Y) + i\n",
        "species Goff = 1, Gon = 0, M = 0\nparam kon = 0.5, koff = 1, ktx = 10, kdeg = 1\n\
         Goff <-> Gon @ kon, koff\nGon -> Gon + M @ ktx\nM -> 0 @ kdeg\n",
    ];

    /// Firing by dense stoichiometry columns (few species) gives the states the sparse net
    /// changes give.
    #[test]
    fn dense_and_sparse_firing_agree() {
        for text in TANGENT_MODELS {
            let model = crate::Model::parse("m.rxn", text).unwrap();
            let c = CompiledModel::new(&model.ir).unwrap();
            let dense = GsStLayout::new(&c);
            assert!(dense.dense_net.is_some());
            let (mut x_dense, mut x_sparse) = (vec![100; c.n_species()], vec![100; c.n_species()]);
            for j in (0..c.n_reactions()).chain((0..c.n_reactions()).rev()) {
                dense.fire(&c, j, &mut x_dense, 0.0, 0).unwrap();
                fire(&c, j, &mut x_sparse, 0.0, 0).unwrap();
                assert_eq!(x_dense, x_sparse);
            }
        }
    }

    /// The unrolled JIT kernel performs the generic loops' operations in their order: the two
    /// agree to the bit on random partial derivatives, coefficients and tangents.
    #[test]
    fn tangent_kernel_matches_generic_loops() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        for text in TANGENT_MODELS {
            let model = crate::Model::parse("m.rxn", text).unwrap();
            let c = CompiledModel::new(&model.ir).unwrap();
            assert!(c.has_gs_st_tangent());
            let (nr, ns, np) = (c.n_reactions(), c.n_species(), c.model.params.len());
            let mut buf = Partials::new(&c);
            for _ in 0..200 {
                let mut value = || rng.random_range(-3.0..3.0);
                // Only the structurally non-zero partials are ever written.
                for &(k, q) in &c.pattern.dparam {
                    buf.dadp[k * np + q] = value();
                }
                for &(k, i) in &c.pattern.dspecies {
                    buf.dadx[k * ns + i] = value();
                }
                let coef: Vec<f64> = (0..nr).map(|_| value().abs()).collect();
                let r: Vec<f64> = (0..nr).map(|_| value().abs()).collect();
                let dx: Vec<f64> = (0..ns * np).map(|_| value()).collect();
                let scale = value().abs();
                let (mut jit, mut generic) = (dx.clone(), dx);
                c.gs_st_tangent(&buf.dadp, &buf.dadx, &coef, &r, scale, &mut jit);
                let (mut v, mut w, mut spread) = (vec![0.0; nr * np], vec![0.0; np], vec![0.0; ns]);
                tangent_update(
                    &c,
                    &buf,
                    &coef,
                    &r,
                    scale,
                    &mut generic,
                    &mut v,
                    &mut w,
                    &mut spread,
                );
                assert_eq!(jit, generic, "{text}");
            }
        }
    }

    /// The compiled GS-ST event loop is the Rust loop, bit for bit: the same records (at several
    /// observation times, one before the first event, two equal, the last at the horizon), the
    /// same event counts, the same errors (too many events; a propensity turning negative).
    #[test]
    fn compiled_gs_st_events_match_the_rust_loop() {
        let negative = "species X = 0, Y = 6\nparam k = 2\n0 -> X @ k\nY -> 0 @= k * (Y - X)\n";
        let absorbing = "species X = 4\nparam k = 1.5\nX -> 0 @ k\n";
        // More species than fire by dense columns: the kernel jumps to code per reaction.
        let chain = format!(
            "species {}\nparam k = 3, d = 0.5\n0 -> S0 @ k\n{}S9 -> 0 @ d\n",
            (0..10)
                .map(|i| format!("S{i} = {}", 10 - i))
                .collect::<Vec<_>>()
                .join(", "),
            (0..9)
                .map(|i| format!("S{i} -> S{} @ k\n", i + 1))
                .collect::<String>(),
        );
        // A full propensity firing without its reactant, by columns and by jumps; a sum of
        // propensities that overflows; a count passing 2^63 - 1 (consumed by a full propensity,
        // which both loops then check at the event).
        let missing = "species A = 2, B = 0\nparam k = 1\nA -> B @= k\n0 -> A @ k\n";
        let missing_many = format!(
            "{}\n{}",
            missing.replace(
                "species A = 2, B = 0",
                "species A = 2, B, C, D, E, F, G, H, I"
            ),
            "C -> D @ k"
        );
        let overflowing_sum = "species A = 0\nparam k = 1e308\n0 -> A @= k\n0 -> 2 A @= k\n";
        let wrapping =
            "species A = 9223372036854775000\nparam k = 1\n0 -> 1000 A @ k\nA -> 0 @= k\n";
        let times = [0.0, 0.3, 1.0, 1.0, 2.5];
        let mut compared_events = 0;
        for text in TANGENT_MODELS.iter().chain(&[
            negative,
            absorbing,
            &chain,
            missing,
            &missing_many,
            overflowing_sum,
            wrapping,
        ]) {
            let model = crate::Model::parse("m.rxn", text).unwrap();
            let c = CompiledModel::new(&model.ir).unwrap();
            // As `rxnc grad` compiles for GS-ST: the event-loop kernel also computes the
            // partials at the start of a trajectory.
            let gs_st = Estimator::GsSt { temperature: 1.0 }.kernels();
            let compiled = CompiledModel::with_kernels(&model.ir, gs_st).unwrap();
            assert!(
                c.has_gs_st_events() && compiled.has_gs_st_events(),
                "{text}"
            );
            let p: Vec<f64> = c.model.params.iter().map(|q| q.value).collect();
            let species = (0..c.n_species()).map(ir::Expr::Species).collect();
            let leaves = Leaves::from_exprs(species, &c.model);
            let layout = GsStLayout::new(&c);
            let (mut events, mut errors, mut invalid) = (0, 0, 0);
            for max_events in [u64::MAX, 40] {
                let o = GradOptions {
                    t_end: 2.5,
                    trajectories: 30,
                    seed: 7,
                    estimator: Estimator::GsSt { temperature: 1.0 },
                    max_events,
                };
                for n in 0..30 {
                    let checks = Checks::AtRecords;
                    let rust =
                        gs_st_trajectory(&c, &p, &leaves, &times, &o, &layout, 1.0, n, checks);
                    let with_all =
                        gs_st_trajectory_compiled(&c, &p, &leaves, &times, &o, &layout, n);
                    let alone =
                        gs_st_trajectory_compiled(&compiled, &p, &leaves, &times, &o, &layout, n);
                    match (rust, with_all, alone) {
                        (Ok(rust), Ok(with_all), Ok(alone)) => {
                            let bits =
                                |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            for jit in [&with_all, &alone] {
                                assert_eq!(bits(&rust.f), bits(&jit.f), "{text}");
                                assert_eq!(bits(&rust.extra), bits(&jit.extra), "{text}");
                                assert_eq!(rust.events, jit.events, "{text}");
                            }
                            assert_eq!(rust.f.len(), times.len() * c.n_species());
                            events += rust.events;
                        }
                        (Err(rust), Err(with_all), Err(alone)) => {
                            assert_eq!(rust, with_all, "{text}");
                            assert_eq!(rust, alone, "{text}");
                            errors += 1;
                            invalid +=
                                usize::from(matches!(rust, SimError::InvalidPropensity { .. }));
                        }
                        (rust, with_all, alone) => {
                            panic!("{text}: {rust:?} against {with_all:?} and {alone:?}")
                        }
                    }
                }
            }
            compared_events += events;
            if *text == negative {
                assert!(invalid > 0, "the negative propensity was not met");
            }
            if *text == absorbing {
                assert_eq!(errors, 0, "{text}");
            }
            if [missing, &missing_many, overflowing_sum, wrapping].contains(text) {
                assert!(errors > 0, "{text}: no trajectory failed");
            }
        }
        assert!(compared_events > 10_000, "{compared_events}");
    }

    /// The moments of [`MomentSums`] (additive sums, a replicate as the total minus a group)
    /// are those computed record by record, with the score's leave-one-out baselines taken
    /// trajectory by trajectory, for every estimator.
    #[test]
    fn moment_sums_match_record_by_record_moments() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let (nl, np, n) = (2, 3, 40);
        let fd = vec![
            FdScale {
                coordinate: FdCoordinate::Log,
                width: 0.7
            };
            np
        ];
        for est in [
            Estimator::GsSt { temperature: 1.0 },
            Estimator::Score,
            Estimator::AltPath,
            Estimator::Fd { sigma: 0.1 },
        ] {
            let records: Vec<Record> = (0..n)
                .map(|_| Record {
                    f: (0..nl).map(|_| rng.random_range(0.0..20.0)).collect(),
                    extra: (0..extra_len(est, nl, np))
                        .map(|_| rng.random_range(-2.0..2.0))
                        .collect(),
                    events: 0,
                })
                .collect();
            let sums_of = |rs: &[Record], shift: &[f64]| {
                let mut sums = MomentSums::new(est, np, shift);
                rs.iter().for_each(|r| sums.add(r, &fd));
                sums
            };
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * (1.0 + b.abs());
            let unshifted = vec![0.0; nl];
            let (total, group) = (
                sums_of(&records, &unshifted),
                sums_of(&records[10..20], &unshifted),
            );
            let rest: Vec<Record> = [&records[..10], &records[20..]].concat();
            for (got, rs) in [
                (total.moments(), &records),
                (total.without(&group).moments(), &rest),
            ] {
                let want = record_by_record_moments(est, rs, nl, np, &fd);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.n, w.n);
                    for (gd, wd) in [(&g.m1, &w.m1), (&g.m2, &w.m2)] {
                        assert!(close(gd.v, wd.v), "{est:?}: {} vs {}", gd.v, wd.v);
                        for (a, b) in gd.d.iter().zip(&wd.d) {
                            assert!(close(*a, *b), "{est:?}: {a} vs {b}");
                        }
                    }
                }
            }
            // Shifting the leaves by constants changes no statistic.
            let shifted = sums_of(&records, &records[3].f).moments();
            for (s, u) in shifted.iter().zip(&total.moments()) {
                use crate::estimators::{Statistic, objective::stat};
                for kind in [Statistic::Mean, Statistic::Var, Statistic::Sd] {
                    let (a, b) = (stat(kind, s), stat(kind, u));
                    assert!(close(a.v, b.v), "{est:?} {kind:?}: {} vs {}", a.v, b.v);
                    for (x, y) in a.d.iter().zip(&b.d) {
                        assert!(close(*x, *y), "{est:?} {kind:?}: {x} vs {y}");
                    }
                }
            }
        }
    }

    /// The moments computed trajectory by trajectory (the definition [`MomentSums`] rearranges).
    fn record_by_record_moments(
        est: Estimator,
        records: &[Record],
        nl: usize,
        np: usize,
        fd: &[FdScale],
    ) -> Vec<LeafMoments> {
        let count = records.len() as f64;
        (0..nl)
            .map(|m| {
                let sum1: f64 = records.iter().map(|r| r.f[m]).sum();
                let sum2: f64 = records.iter().map(|r| r.f[m] * r.f[m]).sum();
                let (mut d1, mut d2) = (vec![0.0; np], vec![0.0; np]);
                for r in records {
                    let f = r.f[m];
                    for q in 0..np {
                        let (a, b) = match est {
                            Estimator::GsSt { .. } => {
                                let df = r.extra[m * np + q];
                                (df, 2.0 * f * df)
                            }
                            Estimator::Score => {
                                let b1 = (sum1 - f) / (count - 1.0);
                                let b2 = (sum2 - f * f) / (count - 1.0);
                                let (s, direct) = (r.extra[q], r.extra[np + m * np + q]);
                                ((f - b1) * s + direct, (f * f - b2) * s + 2.0 * f * direct)
                            }
                            Estimator::AltPath => {
                                let direct = r.extra[m * np + q];
                                let w = r.extra[nl * np + q];
                                let fa = r.extra[nl * np + np + q * nl + m];
                                (
                                    w * (fa - f) + direct,
                                    w * (fa * fa - f * f) + 2.0 * f * direct,
                                )
                            }
                            Estimator::Fd { sigma } => {
                                let (fp, fm) = (r.extra[m], r.extra[nl + m]);
                                let e = r.extra[2 * nl + q] * fd[q].to_theta() / (2.0 * sigma);
                                ((fp - fm) * e, (fp * fp - fm * fm) * e)
                            }
                        };
                        d1[q] += a;
                        d2[q] += b;
                    }
                }
                let mean = |v: Vec<f64>| v.iter().map(|x| x / count).collect();
                LeafMoments {
                    m1: Dual {
                        v: sum1 / count,
                        d: mean(d1),
                    },
                    m2: Dual {
                        v: sum2 / count,
                        d: mean(d2),
                    },
                    shift: 0.0,
                    n: records.len(),
                }
            })
            .collect()
    }

    /// The softmax at temperature 1 taken the general way (logarithms, exponentials) gives the
    /// weights and tangent coefficients of the closed form the hot loop uses.
    #[test]
    fn softmax_at_temperature_one_is_the_closed_form() {
        let a = [0.0, 2.5, 0.25, 7.0, 1e-3];
        let e = [0.3, 1.7, 0.01, 2.2, 0.9];
        let mut y: Vec<f64> = a.iter().zip(&e).map(|(a, e)| a / e).collect();
        let total: f64 = y.iter().sum();
        let closed_y: Vec<f64> = y.iter().map(|r| r / total).collect();
        let closed_coef: Vec<f64> = (a.iter().zip(&e))
            .map(|(&a, &e)| if a > 0.0 { 1.0 / (e * total) } else { 0.0 })
            .collect();
        let mut coef = vec![f64::NAN; a.len()];
        softmax_at_temperature(&a, 1.0, &mut y, &mut coef);
        for j in 0..a.len() {
            assert!((y[j] - closed_y[j]).abs() < 1e-14, "y[{j}]");
            assert!((coef[j] - closed_coef[j]).abs() < 1e-12 * closed_coef[j].max(1.0));
        }
    }
}
