//! Gradient estimators through exact stochastic simulations, all in forward mode: a trajectory
//! carries its tangents (state and time for `gs-st`, a running score for `score`, a pruned
//! alternative path for `alt-path`), so memory per trajectory is O(parameters × species) whatever
//! the number of events. See `docs/gradients.md` for the constructions, biases and variances.
//!
//! Every estimator produces, per trajectory, the values of the objective's leaf expressions and
//! what it needs to estimate the gradient of E\[f\] and E\[f²\] for each leaf; the objective's chain
//! rule is then applied to those moments ([`objective`]). Standard errors come from a grouped
//! jackknife over trajectories, which accounts for the non-linearity of the objective and for the
//! leave-one-out baseline of the score estimator.

pub mod objective;
mod runners;

pub use objective::{Dual, LeafMoments, Objective, Statistic};

use crate::engine::{Shown, SimError, try_map_range, wrong_param_count};
use crate::ir::{self, Expr};
use crate::jit::{CompiledModel, Kernels};
use std::fmt;

/// A gradient estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// Straight-through Gumbel-Softmax: exact forward pass, softmax relaxation of the reaction
    /// choice in the tangent pass. Biased: blind to events crossing the horizon (strong in
    /// transients) and a few to tens of percent off at stationarity, a bias that cooling does not
    /// remove; the variance explodes below a model-dependent temperature.
    GsSt {
        /// Softmax temperature.
        temperature: f64,
    },
    /// Likelihood ratio (score function) with a leave-one-out baseline. Unbiased.
    Score,
    /// Alternative paths on a uniformised clock, pruned to one per parameter and trajectory.
    /// Unbiased.
    AltPath,
    /// Gaussian-smoothed central finite differences with common random numbers and antithetic
    /// pairs. Unbiased for the smoothed objective.
    Fd {
        /// Smoothing width, relative (in log space for positive rates), in (0, [`FD_MAX_SIGMA`]].
        sigma: f64,
    },
}

/// The largest smoothing width of [`Estimator::Fd`]: a parameter perturbed by e^±10 (or ten times
/// its size) is no longer smoothed locally, and larger widths overflow parameters to infinity.
pub const FD_MAX_SIGMA: f64 = 10.0;

impl Estimator {
    /// The name used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::GsSt { .. } => "gs-st",
            Estimator::Score => "score",
            Estimator::AltPath => "alt-path",
            Estimator::Fd { .. } => "fd",
        }
    }
    /// The kernels the estimator runs on: compile these with
    /// [`CompiledModel::with_kernels`](crate::jit::CompiledModel::with_kernels) to save start-up time.
    pub fn kernels(&self) -> Kernels {
        match self {
            // At temperature 1 the event-loop kernel (with the tangent update inline) runs every
            // trajectory, unless one must be replayed with checks after every event, which the
            // Rust loop does with its generic tangent loops; at other temperatures the Rust loop
            // runs with the tangent kernel.
            &Estimator::GsSt { temperature } => Kernels {
                gs_st_tangent: temperature != 1.0,
                gs_st_events: temperature == 1.0,
                ..Kernels::PARTIALS
            },
            Estimator::Score => Kernels::PARTIALS,
            Estimator::AltPath => Kernels {
                simulation: true,
                ..Kernels::PARTIALS
            },
            Estimator::Fd { .. } => Kernels::SIMULATION,
        }
    }
    /// All names, for help texts.
    pub const NAMES: [&'static str; 4] = ["gs-st", "score", "alt-path", "fd"];
}

/// Options of a gradient estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct GradOptions {
    /// The horizon at which the objective's statistics are taken.
    pub t_end: f64,
    /// Number of trajectories.
    pub trajectories: usize,
    /// Seed of the random streams.
    pub seed: u64,
    /// The estimator.
    pub estimator: Estimator,
    /// Events allowed per trajectory.
    pub max_events: u64,
}

/// An estimate with its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The estimate.
    pub estimate: f64,
    /// Its standard error.
    pub stderr: f64,
}

/// The objective and its gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct GradResult {
    /// The objective's estimate.
    pub objective: Estimate,
    /// (parameter name, derivative) for every free parameter, in declaration order.
    pub gradient: Vec<(String, Estimate)>,
    /// The estimator's name.
    pub estimator: &'static str,
    /// Number of trajectories.
    pub trajectories: usize,
    /// Events simulated in all (including alternative and perturbed paths).
    pub events: u64,
    /// What may make the estimate wrong without making it non-finite (for example a reaction
    /// that cannot fire although its propensity depends on a parameter), one sentence each.
    pub warnings: Vec<String>,
}

/// A gradient estimate failed.
#[derive(Debug, Clone, PartialEq)]
pub enum GradError {
    /// Unusable options.
    Options(String),
    /// A simulation failed.
    Simulation(SimError),
    /// The estimate is not finite.
    NonFinite {
        /// The estimator.
        estimator: &'static str,
        /// What is not finite and the likely reason.
        what: String,
    },
}

impl fmt::Display for GradError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GradError::Options(m) => f.write_str(m),
            GradError::Simulation(e) => write!(f, "{e}"),
            GradError::NonFinite { estimator, what } => {
                write!(f, "the {estimator} estimate is not finite: {what}")
            }
        }
    }
}

impl std::error::Error for GradError {}

impl From<SimError> for GradError {
    fn from(e: SimError) -> Self {
        GradError::Simulation(e)
    }
}

/// One trajectory's contribution: the leaves' values and the estimator's raw material.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    /// Leaf values at the horizon (M).
    pub f: Vec<f64>,
    /// Estimator-specific data (see each runner).
    pub extra: Vec<f64>,
    /// Events simulated for this record.
    pub events: u64,
}

/// The leaves of an objective with their symbolic derivatives, evaluated at the horizon.
pub(crate) struct Leaves {
    exprs: Vec<Expr>,
    by_species: Vec<Vec<Expr>>,
    by_param: Vec<Vec<Expr>>,
}

impl Leaves {
    fn new(objective: &Objective, model: &ir::Model) -> Leaves {
        Leaves::from_exprs(objective.leaves.clone(), model)
    }
    fn from_exprs(exprs: Vec<Expr>, model: &ir::Model) -> Leaves {
        let by_species = exprs
            .iter()
            .map(|e| {
                (0..model.species.len())
                    .map(|i| ir::derive(e, ir::Var::Species(i)))
                    .collect()
            })
            .collect();
        let by_param = exprs
            .iter()
            .map(|e| {
                (0..model.params.len())
                    .map(|q| ir::derive(e, ir::Var::Param(q)))
                    .collect()
            })
            .collect();
        Leaves {
            exprs,
            by_species,
            by_param,
        }
    }
    pub fn len(&self) -> usize {
        self.exprs.len()
    }
    pub fn values(&self, x: &[i64], p: &[f64], t: f64) -> Vec<f64> {
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        self.exprs.iter().map(|e| e.eval(&xf, p, t)).collect()
    }
    /// ∂f_m/∂θ_q at the state, as `[m][q]`.
    pub fn direct(&self, x: &[i64], p: &[f64], t: f64) -> Vec<f64> {
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        self.by_param
            .iter()
            .flat_map(|row| row.iter().map(|d| d.eval(&xf, p, t)).collect::<Vec<_>>())
            .collect()
    }
    /// The pathwise derivative `∇_x f · dx + ∂f/∂θ` as `[m][q]`, with `dx` as `[species][param]`.
    pub fn pathwise(&self, x: &[i64], dx: &[f64], p: &[f64], t: f64) -> Vec<f64> {
        let np = p.len();
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut out = self.direct(x, p, t);
        for (m, row) in self.by_species.iter().enumerate() {
            for (i, d) in row.iter().enumerate() {
                if ir::is_zero(d) {
                    continue;
                }
                let g = d.eval(&xf, p, t);
                for q in 0..np {
                    out[m * np + q] += g * dx[i * np + q];
                }
            }
        }
        out
    }
}

/// Why `estimator` cannot run on `compiled`, if it cannot: the model was compiled without kernels
/// the estimator runs on, or its propensities read time (only fd simulates those exactly).
pub(crate) fn unsupported(compiled: &CompiledModel, estimator: Estimator) -> Option<String> {
    if !compiled.kernels().contains(estimator.kernels()) {
        return Some(format!(
            "the {} estimator needs kernels this model was not compiled with: compile it with \
             CompiledModel::with_kernels(model, Estimator::kernels())",
            estimator.name()
        ));
    }
    (compiled.model.time_dependent && !matches!(estimator, Estimator::Fd { .. })).then(|| {
        format!(
            "the {} estimator does not support propensities that read time `t` yet (it would hold \
             them fixed between events); use --estimator fd, which simulates them exactly",
            estimator.name()
        )
    })
}

/// Estimates the objective and its gradient with respect to every free parameter.
pub fn estimate_gradient(
    compiled: &CompiledModel,
    params: &[f64],
    objective: &Objective,
    options: &GradOptions,
) -> Result<GradResult, GradError> {
    let model = &compiled.model;
    if let Some(m) = unsupported(compiled, options.estimator) {
        return Err(GradError::Options(m));
    }
    if model.params.is_empty() {
        return Err(GradError::Options(
            "the model has no free parameters to differentiate; declare rates with `param` instead of `const`".into(),
        ));
    }
    if !(options.t_end.is_finite() && options.t_end > 0.0) {
        return Err(GradError::Options(format!(
            "the horizon must be a positive finite time, not {}",
            options.t_end
        )));
    }
    // The jackknife leaves groups out, so every statistic is also taken over all trajectories
    // but one: var and sd need two trajectories there, and so does the score's leave-one-out
    // baseline (which averages over the others), so three in all.
    let why_three = if objective.uses_spread() {
        Some(" of var or sd")
    } else if options.estimator == Estimator::Score {
        Some(
            " with the score estimator (its leave-one-out baseline needs two trajectories even with one left out)",
        )
    } else {
        None
    };
    let needed = if why_three.is_some() { 3 } else { 2 };
    if options.trajectories < needed {
        return Err(GradError::Options(format!(
            "at least {needed} trajectories are needed to estimate standard errors{}, not {}",
            why_three.unwrap_or(""),
            options.trajectories
        )));
    }
    match options.estimator {
        Estimator::GsSt { temperature } if !(temperature.is_finite() && temperature > 0.0) => {
            return Err(GradError::Options(format!(
                "the temperature must be positive, not {}",
                Shown(temperature)
            )));
        }
        Estimator::Fd { sigma } if !(sigma > 0.0 && sigma <= FD_MAX_SIGMA) => {
            return Err(GradError::Options(format!(
                "the smoothing width must be positive and at most {FD_MAX_SIGMA}, not {}; it is \
                 relative to each parameter (in log space for positive rates), so 0.01 to 0.5 \
                 are usual",
                Shown(sigma)
            )));
        }
        _ => {}
    }
    if let Some(why) = wrong_param_count(compiled, params) {
        return Err(GradError::Options(why));
    }
    if let Estimator::Fd { .. } = options.estimator
        && let Some(why) = runners::fd_at_a_bound(model, params)
    {
        return Err(GradError::Options(why));
    }
    let leaves = Leaves::new(objective, model);
    let shared = runners::Shared::new(compiled, params);
    let fd_scales = &shared.fd;
    let trajectory = |n: usize| {
        runners::run(
            compiled,
            params,
            &leaves,
            &[options.t_end],
            options,
            &shared,
            n,
        )
    };
    // The leaves of the first trajectory: a typical value of each (0 where it is not finite),
    // for the moment sums (see `MomentSums::new`).
    let first = trajectory(0)?;
    let (nl, np) = (leaves.len(), params.len());
    let shift: Vec<f64> = (first.f[..nl].iter())
        .map(|&f| if f.is_finite() { f } else { 0.0 })
        .collect();
    let shift = &shift[..];

    // Grouped jackknife: delete each of G contiguous groups in turn. Each group's sums once, the
    // total as their sum, and every replicate as the total minus one group. Trajectories are
    // summed as they finish (memory does not grow with -n), in blocks of consecutive ones (up to
    // 8 per group, so that many cores share 50 groups), merged in order: the same sums whatever
    // the threads.
    let n = options.trajectories;
    let groups = n.min(50);
    const BLOCKS_PER_GROUP: usize = 8;
    let blocks = groups * BLOCKS_PER_GROUP;
    let block_range = |b: usize| {
        let (g, k) = (b / BLOCKS_PER_GROUP, b % BLOCKS_PER_GROUP);
        let (lo, hi) = (g * n / groups, (g + 1) * n / groups);
        lo + k * (hi - lo) / BLOCKS_PER_GROUP..lo + (k + 1) * (hi - lo) / BLOCKS_PER_GROUP
    };
    let block_sums: Vec<(runners::MomentSums, u64)> = try_map_range(0..blocks, |b| {
        let mut sums = runners::MomentSums::new(options.estimator, np, shift);
        let mut events = 0;
        for i in block_range(b) {
            let record = if i == 0 {
                first.clone()
            } else {
                trajectory(i)?
            };
            events += record.events;
            sums.add(&record, fd_scales);
        }
        Ok::<_, SimError>((sums, events))
    })?;
    let events = block_sums.iter().map(|(_, e)| e).sum();
    let group_sums: Vec<runners::MomentSums> = block_sums
        .chunks(BLOCKS_PER_GROUP)
        .map(|group| {
            let mut sums = runners::MomentSums::new(options.estimator, np, shift);
            group.iter().for_each(|(block, _)| sums.merge(block));
            sums
        })
        .collect();
    let mut total = runners::MomentSums::new(options.estimator, np, shift);
    for sums in &group_sums {
        total.merge(sums);
    }
    let moments = total.moments();
    let full = objective.evaluate(&moments);
    // When the moments and their gradients are finite, a non-finite result is the objective's
    // doing (sd of a constant, log of zero), not the estimator's.
    let moments_finite = moments.iter().all(|m| {
        [&m.m1, &m.m2]
            .iter()
            .all(|d| d.v.is_finite() && d.d.iter().all(|v| v.is_finite()))
    });
    let replicates: Vec<Dual> = (group_sums.iter())
        .map(|group| objective.evaluate(&total.without(group).moments()))
        .collect();
    let jackknife_se = |value: &dyn Fn(&Dual) -> f64| {
        let g = groups as f64;
        let mean = replicates.iter().map(value).sum::<f64>() / g;
        ((g - 1.0) / g
            * replicates
                .iter()
                .map(|r| (value(r) - mean).powi(2))
                .sum::<f64>())
        .sqrt()
    };
    let name = options.estimator.name();
    // Where the objective stops being finite: at the full moments, or else at a jackknife
    // replicate's (a statistic that is 0 once one group is left out).
    let locate = |moments: &[LeafMoments]| {
        objective.locate_non_finite(moments).or_else(|| {
            (group_sums.iter())
                .find_map(|g| objective.locate_non_finite(&total.without(g).moments()))
        })
    };
    let objective_estimate = Estimate {
        estimate: full.v,
        stderr: jackknife_se(&|d: &Dual| d.v),
    };
    if !(objective_estimate.estimate.is_finite() && objective_estimate.stderr.is_finite()) {
        // A statistic's argument that is not finite in some trajectory is the cause to name.
        if let Some((leaf, m)) =
            (objective.leaves.iter().zip(&moments)).find(|(_, m)| !m.m1.v.is_finite())
        {
            return Err(GradError::NonFinite {
                estimator: name,
                what: format!(
                    "`{}` is infinite or NaN at t = {} in some trajectories (its mean is {}), for \
                     example a division by a count that is 0 or the log of 0",
                    model.expr_to_string(leaf),
                    Shown(options.t_end),
                    m.m1.v
                ),
            });
        }
        let what = match locate(&moments) {
            Some(place) => place,
            None => format!("the objective evaluates to {}", Shown(full.v)),
        };
        return Err(GradError::NonFinite {
            estimator: name,
            what,
        });
    }
    let affects = model.params_affecting(&objective.leaves);
    let mut gradient = Vec::with_capacity(params.len());
    for (q, p) in model.params.iter().enumerate() {
        // A parameter that cannot affect the objective (no reaction it reaches changes a species
        // the objective reads, and the objective does not read it) has the exact derivative 0:
        // report that rather than the estimator's noise around it (score's weights, fd's
        // perturbations of the others), or its failure.
        if !affects[q] {
            let zero = Estimate {
                estimate: 0.0,
                stderr: 0.0,
            };
            gradient.push((p.name.clone(), zero));
            continue;
        }
        let e = Estimate {
            estimate: full.d[q],
            stderr: jackknife_se(&|d: &Dual| d.d[q]),
        };
        if !(e.estimate.is_finite() && e.stderr.is_finite()) {
            let place = moments_finite.then(|| locate(&moments)).flatten();
            let why = match (place.as_deref(), options.estimator) {
                (Some(place), _) => place,
                _ if moments_finite => {
                    "the objective is not differentiable at the estimated statistics (sd of a \
                     quantity with zero variance, or a log or division at zero)"
                }
                (_, Estimator::GsSt { .. }) => {
                    "the tangents overflowed; at low temperature on long trajectories the \
                     straight-through variance explodes: raise --temperature or use --estimator score"
                }
                (_, Estimator::Score) => {
                    "a propensity derivative was not finite (check rate laws at zero counts)"
                }
                _ => "a derivative of the objective is not finite at the estimated moments",
            };
            return Err(GradError::NonFinite {
                estimator: name,
                what: format!(
                    "d/d{} is {} ± {}: {why}",
                    p.name,
                    Shown(e.estimate),
                    Shown(e.stderr)
                ),
            });
        }
        gradient.push((p.name.clone(), e));
    }
    // A derivative that is exactly 0 in every trajectory for a parameter that can affect the
    // objective: the estimator saw nothing (a temperature too low to relax the choice, a width
    // too small to change any trajectory, a reaction that cannot fire), not a measured 0.
    let unseen = runners::unseen_reactions(compiled, params, options.estimator);
    let mut warnings: Vec<String> = unseen.iter().map(|(_, w)| w.clone()).collect();
    warnings.extend((0..params.len()).filter_map(|q| model.initial_count_note(q)));
    // Whether no propensity changes with parameter q at the initial state (a `max(a, 2)` on its
    // other branch, a factor that is 0): an exact 0 is then likely the true local derivative.
    // Derived symbolically here, for the rare parameter that needs it (fd has no partials kernel).
    let flat_at_start = |q: usize| {
        let x: Vec<f64> = model.initial_state().iter().map(|&v| v as f64).collect();
        model.reactions.iter().all(|r| {
            crate::ir::derive::derive(&r.propensity, crate::ir::derive::Var::Param(q))
                .eval(&x, params, 0.0)
                == 0.0
        })
    };
    for (q, (name, e)) in gradient.iter().enumerate() {
        let explained = unseen.iter().any(|(p, _)| *p == q);
        let exact_zero = affects[q] && !explained && e.estimate == 0.0 && e.stderr == 0.0;
        if exact_zero && flat_at_start(q) {
            warnings.push(format!(
                "d/d{name} is exactly 0 in every trajectory, and no propensity changes with \
                 `{name}` at the initial state (a min or max on its other branch, a factor that is \
                 0): likely the true local derivative, though {name_} would also miss an effect \
                 that only other states show",
                name_ = options.estimator.name()
            ));
        } else if exact_zero {
            warnings.push(format!(
                "d/d{name} is exactly 0 in every trajectory although `{name}` can affect the \
                 objective: {name_} saw no effect of it here, which may be a blind spot rather \
                 than a measured 0 (see docs/gradients.md, Limitations)",
                name_ = options.estimator.name()
            ));
        }
    }
    Ok(GradResult {
        objective: objective_estimate,
        gradient,
        estimator: name,
        trajectories: options.trajectories,
        events,
        warnings,
    })
}

/// Per-trajectory records of an estimator at several observation times: one simulation per
/// trajectory yields the leaves' values and the estimator's tangent material at every time (gs-st:
/// the state and its pathwise derivative when the time is crossed; score: the running score,
/// censored at that time; alt-path: the alternative's state, equal to the primal's before it
/// branches; fd: the perturbed runs' states). Losses that are functions of expectations
/// E[g(leaf at time k)] take their gradients from [`TimedRecords::expectation`].
pub struct TimedRecords {
    records: Vec<Record>,
    estimator: Estimator,
    nl: usize,
    np: usize,
    nt: usize,
    fd_scales: Vec<runners::FdScale>,
    /// Events simulated in all.
    pub events: u64,
}

/// Runs trajectories `range` (stream indices) under `options.estimator` and records `leaves` at
/// every time of `times` (ascending, positive or zero, the last no later than `options.t_end`).
pub fn run_timed(
    compiled: &CompiledModel,
    params: &[f64],
    leaves: &[Expr],
    times: &[f64],
    options: &GradOptions,
    range: std::ops::Range<usize>,
) -> Result<TimedRecords, SimError> {
    let model = &compiled.model;
    if let Some(m) = unsupported(compiled, options.estimator) {
        return Err(SimError::Options(m));
    }
    if let Some(why) = wrong_param_count(compiled, params) {
        return Err(SimError::Options(why));
    }
    let leaves = Leaves::from_exprs(leaves.to_vec(), model);
    let shared = runners::Shared::new(compiled, params);
    let records = try_map_range(range, |n| {
        runners::run(compiled, params, &leaves, times, options, &shared, n)
    })?;
    let events = records.iter().map(|r| r.events).sum();
    Ok(TimedRecords {
        records,
        estimator: options.estimator,
        nl: leaves.len(),
        np: params.len(),
        nt: times.len(),
        fd_scales: shared.fd,
        events,
    })
}

impl TimedRecords {
    /// Number of trajectories.
    pub fn len(&self) -> usize {
        self.records.len()
    }
    /// Whether there are no trajectories.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    /// The value of leaf `m` at time index `k` in trajectory `n`.
    pub fn value(&self, n: usize, k: usize, m: usize) -> f64 {
        self.records[n].f[k * self.nl + m]
    }
    fn extra(&self, n: usize, k: usize) -> &[f64] {
        let e = runners::extra_len(self.estimator, self.nl, self.np);
        &self.records[n].extra[k * e..(k + 1) * e]
    }
    /// The pathwise derivative d(leaf m at time k)/dθ of trajectory `n` (gs-st only).
    pub fn pathwise(&self, n: usize, k: usize, m: usize) -> Option<&[f64]> {
        match self.estimator {
            Estimator::GsSt { .. } => Some(&self.extra(n, k)[m * self.np..(m + 1) * self.np]),
            _ => None,
        }
    }
    /// E[g(f)] over the trajectories for leaf `m` at time index `k`, and its gradient, where `g`
    /// returns g(f) and g'(f). gs-st differentiates pathwise (g' times the leaf's tangent: zero for
    /// step functions); score, alt-path and fd differentiate the expectation itself.
    pub fn expectation(&self, k: usize, m: usize, g: &dyn Fn(f64) -> (f64, f64)) -> Dual {
        let (nl, np) = (self.nl, self.np);
        let count = self.records.len() as f64;
        let vals: Vec<(f64, f64)> = (0..self.records.len())
            .map(|n| g(self.value(n, k, m)))
            .collect();
        let sum: f64 = vals.iter().map(|v| v.0).sum();
        let mut d = vec![0.0; np];
        for (n, &(gv, gd)) in vals.iter().enumerate() {
            let extra = self.extra(n, k);
            match self.estimator {
                Estimator::GsSt { .. } => {
                    for q in 0..np {
                        d[q] += gd * extra[m * np + q];
                    }
                }
                Estimator::Score => {
                    let baseline = (sum - gv) / (count - 1.0).max(1.0);
                    for q in 0..np {
                        d[q] += (gv - baseline) * extra[q] + gd * extra[np + m * np + q];
                    }
                }
                Estimator::AltPath => {
                    for q in 0..np {
                        let direct = extra[m * np + q];
                        let w = extra[nl * np + q];
                        let fa = extra[nl * np + np + q * nl + m];
                        let ga = if w != 0.0 { g(fa).0 } else { gv };
                        d[q] += w * (ga - gv) + gd * direct;
                    }
                }
                Estimator::Fd { sigma } => {
                    let (gp, gm) = (g(extra[m]).0, g(extra[nl + m]).0);
                    for q in 0..np {
                        let e = extra[2 * nl + q] * self.fd_scales[q].to_theta() / (2.0 * sigma);
                        d[q] += (gp - gm) * e;
                    }
                }
            }
        }
        Dual {
            v: sum / count,
            d: d.into_iter().map(|v| v / count).collect(),
        }
    }
    /// Number of observation times.
    pub fn times(&self) -> usize {
        self.nt
    }
}
