//! The exact stochastic simulation engine: Gillespie's direct method over the JIT kernels.
//!
//! After each event only the propensities that read a changed species are recomputed (the fire
//! kernel does this); the total `a0` is kept incrementally and re-summed every
//! [`RESYNC_EVERY`] events, or at once after a large cancellation, so rounding cannot drift.
//! Every trajectory draws from its own random stream keyed by `(seed, trajectory index)`, so an
//! ensemble is bit-for-bit the same whatever the number of threads.

mod output;

pub use output::{
    EnsembleMoments, NonFiniteRows, StatRow, TrajectoryWriter, write_stats, write_trajectories,
};

use crate::ir;
use crate::jit::CompiledModel;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How often the running total of the propensities is recomputed from scratch.
pub const RESYNC_EVERY: u32 = 1024;

/// The random stream of one trajectory.
pub type TrajectoryRng = Xoshiro256PlusPlus;

/// SplitMix64: a bijective 64-bit mixer, used to derive independent stream keys.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of trajectory `index` under `seed`: independent of thread scheduling.
pub fn stream_rng(seed: u64, index: u64) -> TrajectoryRng {
    let key = splitmix64(splitmix64(seed) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut bytes = [0u8; 32];
    let mut s = key;
    for chunk in bytes.chunks_mut(8) {
        s = splitmix64(s);
        chunk.copy_from_slice(&s.to_le_bytes());
    }
    Xoshiro256PlusPlus::from_seed(bytes)
}

/// Options of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// The horizon.
    pub t_end: f64,
    /// Sampling interval of the output grid `0, every, 2 every, ..., t_end`.
    pub every: f64,
    /// Number of trajectories.
    pub trajectories: usize,
    /// Seed of the random streams.
    pub seed: u64,
    /// Events allowed per trajectory before the run is stopped as runaway.
    pub max_events: u64,
    /// Threads to run the trajectories on, the calling thread included; `None`: the process-wide
    /// [`worker_threads`]. The ensemble does not depend on it.
    pub threads: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            t_end: 1.0,
            every: 0.01,
            trajectories: 1,
            seed: 0,
            max_events: 100_000_000,
            threads: None,
        }
    }
}

impl SimOptions {
    /// The sampling times: multiples of `every` up to `t_end`, and `t_end` itself.
    pub fn grid(&self) -> Vec<f64> {
        let steps = (self.t_end / self.every * (1.0 + 1e-12)).floor() as usize;
        // k × every in decimal: with every = m / 10^d, k m / 10^d is one correctly rounded
        // division, so that 3 × 0.1 is written 0.3, not 0.30000000000000004.
        let shown = format!("{}", self.every);
        let decimals = shown.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
        let scale = 10f64.powi(decimals);
        let mantissa = (self.every * scale).round();
        let exact =
            decimals <= 15 && (mantissa * steps as f64) < 9e15 && mantissa / scale == self.every;
        let mut times: Vec<f64> = (0..=steps)
            .map(|k| {
                if exact {
                    (k as f64 * mantissa) / scale
                } else {
                    k as f64 * self.every
                }
            })
            .collect();
        // The last time is T itself: a multiple of `every` within rounding of T (0.99999999999
        // for every = 0.33333333333) becomes T, rather than T following it.
        match times.last_mut() {
            Some(l) if (self.t_end - *l) > 1e-9 * self.t_end => times.push(self.t_end),
            Some(l) => *l = self.t_end,
            None => times.push(self.t_end),
        }
        times
    }

    fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Options(m));
        if !(self.t_end.is_finite() && self.t_end > 0.0) {
            return bad(format!(
                "the horizon must be a positive finite time, not {}",
                self.t_end
            ));
        }
        if !(self.every.is_finite() && self.every > 0.0) {
            return bad(format!(
                "the sampling interval must be a positive finite time, not {}",
                self.every
            ));
        }
        if self.t_end / self.every > 1e8 - 1.0 {
            return bad(format!(
                "sampling every {} up to {} gives more than 10^8 time points; choose a larger interval",
                self.every, self.t_end
            ));
        }
        if self.trajectories == 0 {
            return bad("the number of trajectories must be at least 1".into());
        }
        if self.max_events == 0 {
            return bad("the event limit must be at least 1".into());
        }
        Ok(())
    }
}

/// A simulation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SimError {
    /// The options are unusable.
    Options(String),
    /// A propensity evaluated to a negative number or NaN.
    InvalidPropensity {
        /// The reaction whose propensity is invalid.
        reaction: String,
        /// Its value.
        value: f64,
        /// When.
        time: f64,
        /// The state then, as (species, count).
        state: Vec<(String, i64)>,
        /// Which trajectory.
        trajectory: usize,
    },
    /// A reaction fired that took a species below zero (its propensity was not zero when it
    /// lacked reactants).
    NegativeCount {
        /// The reaction that fired.
        reaction: String,
        /// The species that went negative.
        species: String,
        /// When.
        time: f64,
        /// The state after firing.
        state: Vec<(String, i64)>,
        /// Which trajectory.
        trajectory: usize,
    },
    /// Every propensity is finite but their sum is not.
    PropensitySumOverflow {
        /// The reaction with the largest propensity.
        reaction: String,
        /// Its propensity.
        value: f64,
        /// When.
        time: f64,
        /// The state then.
        state: Vec<(String, i64)>,
        /// Which trajectory.
        trajectory: usize,
    },
    /// A propensity's derivative with respect to a parameter is not finite (gradient estimators).
    NonFiniteDerivative {
        /// The reaction.
        reaction: String,
        /// The parameter, or the species for a derivative with respect to the state.
        param: String,
        /// The derivative's value.
        value: f64,
        /// When.
        time: f64,
        /// The state then.
        state: Vec<(String, i64)>,
        /// Which trajectory.
        trajectory: usize,
    },
    /// The derivative an estimator carries along a trajectory (GS-ST's state tangent, the score)
    /// overflowed although every partial derivative of the propensities was finite.
    TangentOverflow {
        /// When it was noticed.
        time: f64,
        /// The state then.
        state: Vec<(String, i64)>,
        /// Which trajectory.
        trajectory: usize,
    },
    /// The trajectory stopped because another one in the ensemble failed first (never returned
    /// by [`Ensemble::run`], which reports the failure itself).
    Cancelled,
    /// A count passed the largest representable one (2^63 - 1) and wrapped around.
    CountOverflow {
        /// The species.
        species: String,
        /// When it was seen (a sampling time).
        time: f64,
        /// Which trajectory.
        trajectory: usize,
        /// The state then.
        state: Vec<(String, i64)>,
    },
    /// A trajectory reached the event limit.
    TooManyEvents {
        /// The limit.
        limit: u64,
        /// How far it got.
        time: f64,
        /// Which trajectory.
        trajectory: usize,
        /// The state then.
        state: Vec<(String, i64)>,
    },
}

/// A number for a message: plain when short, in scientific notation when very small or large
/// (`{}` writes 1e-300 with 300 digits).
pub(crate) struct Shown(pub(crate) f64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x != 0.0 && x.is_finite() && !(1e-4..1e9).contains(&x.abs()) {
            write!(f, "{x:e}")
        } else {
            write!(f, "{x}")
        }
    }
}

fn state_text<V: fmt::Display>(state: &[(String, V)]) -> String {
    state
        .iter()
        .map(|(n, v)| format!("{n} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A state whose negative counts wrapped around past 2^63 - 1, with those counts as they are.
fn unwrapped_state_text(state: &[(String, i64)]) -> String {
    let unwrapped = |v: i64| {
        if v < 0 {
            i128::from(v) + (1i128 << 64)
        } else {
            i128::from(v)
        }
    };
    let state: Vec<(String, i128)> = state
        .iter()
        .map(|(n, v)| (n.clone(), unwrapped(*v)))
        .collect();
    state_text(&state)
}

/// The state as (species, count) pairs, for an error.
pub(crate) fn named_state(model: &ir::Model, x: &[i64]) -> Vec<(String, i64)> {
    (model.species.iter().zip(x))
        .map(|(s, &v)| (s.name.clone(), v))
        .collect()
}

/// A count that passed 2^63 - 1 and wrapped around to a negative value, if any. Reactions that
/// take a count below zero are stopped when they fire ([`reactants_missing`]), so a negative
/// count seen later can only have wrapped.
pub(crate) fn count_overflow(
    model: &ir::Model,
    x: &[i64],
    time: f64,
    trajectory: usize,
) -> Option<SimError> {
    let i = x.iter().position(|&v| v < 0)?;
    Some(SimError::CountOverflow {
        species: model.species[i].name.clone(),
        time,
        trajectory,
        state: named_state(model, x),
    })
}

/// Reaction `fired`, just fired into state `x`, took one of its reactants below zero: only a full
/// propensity (`@=`) can fire without its reactants (mass action vanishes then). A count that was
/// already negative had wrapped around ([`count_overflow`]), and is not this reaction's doing.
pub(crate) fn reactants_missing(
    model: &ir::Model,
    fired: usize,
    x: &[i64],
    time: f64,
    trajectory: usize,
) -> Option<SimError> {
    let reaction = &model.reactions[fired];
    let (i, _) = reaction
        .net
        .iter()
        .find(|&&(i, d)| d < 0 && x[i] < 0 && x[i] >= d)?;
    Some(SimError::NegativeCount {
        reaction: reaction.name.clone(),
        species: model.species[*i].name.clone(),
        time,
        state: named_state(model, x),
        trajectory,
    })
}

/// Why the propensities `a` at state `x` cannot drive a simulation, if they cannot: a count that
/// wrapped around (it makes propensities meaningless, negative ones among them), a propensity that
/// is negative, infinite or NaN, or finite propensities whose sum overflows.
pub(crate) fn propensity_failure(
    model: &ir::Model,
    x: &[i64],
    a: &[f64],
    time: f64,
    trajectory: usize,
) -> Option<SimError> {
    if let Some(e) = count_overflow(model, x, time, trajectory) {
        return Some(e);
    }
    if let Some(k) = a.iter().position(|v| !(0.0..f64::INFINITY).contains(v)) {
        return Some(SimError::InvalidPropensity {
            reaction: model.reactions[k].name.clone(),
            value: a[k],
            time,
            state: named_state(model, x),
            trajectory,
        });
    }
    let total: f64 = a.iter().sum();
    (!total.is_finite()).then(|| overflowing_total(model, x, a, time, trajectory))
}

/// Trajectory `trajectory` reached `limit` events at `time` in state `x`, or, if a count wrapped
/// around on the way, overflowed.
pub(crate) fn too_many_events(
    model: &ir::Model,
    x: &[i64],
    limit: u64,
    time: f64,
    trajectory: usize,
) -> SimError {
    count_overflow(model, x, time, trajectory).unwrap_or_else(|| SimError::TooManyEvents {
        limit,
        time,
        trajectory,
        state: named_state(model, x),
    })
}

/// Finite propensities whose sum is not finite: the error names the largest.
fn overflowing_total(
    model: &ir::Model,
    x: &[i64],
    a: &[f64],
    time: f64,
    trajectory: usize,
) -> SimError {
    let largest = (0..a.len())
        .max_by(|&i, &j| a[i].total_cmp(&a[j]))
        .unwrap_or(0);
    SimError::PropensitySumOverflow {
        reaction: model.reactions[largest].name.clone(),
        value: a[largest],
        time,
        state: named_state(model, x),
        trajectory,
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Options(m) => f.write_str(m),
            SimError::NonFiniteDerivative {
                reaction,
                param,
                value,
                time,
                state,
                trajectory,
            } => write!(
                f,
                "the derivative of reaction `{reaction}`'s propensity with respect to `{param}` is {value} \
                 at t = {shown_time} in trajectory {trajectory} (state: {}); gradients need rate laws that are \
                 differentiable where the simulation goes. Check powers, logarithms and divisions at zero",
                state_text(state),
                value = Shown(*value),
                shown_time = Shown(*time)
            ),
            SimError::TangentOverflow {
                time,
                state,
                trajectory,
            } => write!(
                f,
                "the derivative with respect to the parameters that the estimator carries along \
                 trajectory {trajectory} overflowed by t = {shown_time} although every partial derivative \
                 of the propensities was finite (state: {}). Shorten the horizon, or try another \
                 estimator",
                state_text(state),
                shown_time = Shown(*time)
            ),
            SimError::Cancelled => f.write_str("cancelled after another trajectory failed"),
            SimError::InvalidPropensity {
                reaction,
                value,
                time,
                state,
                trajectory,
            } => write!(
                f,
                "the propensity of reaction `{reaction}` is {value} at t = {shown_time} in trajectory {trajectory} \
                 (state: {}); propensities must be finite and non-negative. {}",
                state_text(state),
                if *value == f64::INFINITY {
                    "Check its rate law for overflow: a large rate constant times the many \
                     combinations of reactant molecules, a power or exp of a large count, or a \
                     division by zero"
                } else {
                    "Check its rate law for subtractions, divisions by zero, or logarithms of zero"
                },
                value = Shown(*value),
                shown_time = Shown(*time)
            ),
            SimError::PropensitySumOverflow {
                reaction,
                value,
                time,
                state,
                trajectory,
            } => write!(
                f,
                "the propensities in trajectory {trajectory} sum to more than the largest \
                 floating-point number (about 1.8e308) at t = {shown_time}, the largest being reaction `{reaction}`'s, {value} \
                 (state: {}); propensities must stay far below that. Check its rate law, or \
                 measure the model in larger units",
                state_text(state),
                value = Shown(*value),
                shown_time = Shown(*time)
            ),
            SimError::NegativeCount {
                reaction,
                species,
                time,
                state,
                trajectory,
            } => write!(
                f,
                "reaction `{reaction}` fired at t = {shown_time} in trajectory {trajectory} and left `{species}` \
                 negative (state after: {}); a full propensity (`@=`) must be zero when its reactants are \
                 missing, for example by multiplying by `{species}`, or use mass action (`@`)",
                state_text(state),
                shown_time = Shown(*time)
            ),
            SimError::CountOverflow {
                species,
                time,
                trajectory,
                state,
            } => write!(
                f,
                "the count of `{species}` in trajectory {trajectory} passed the largest count, \
                 2^63 - 1, by t = {shown_time} (state: {}); the model grows without bound. Shorten \
                 --t-end, or check its rates",
                unwrapped_state_text(state),
                shown_time = Shown(*time)
            ),
            SimError::TooManyEvents {
                limit,
                time,
                trajectory,
                state,
            } => write!(
                f,
                "trajectory {trajectory} reached the limit of {limit} events at t = {shown_time} (state: {}); \
                 the model may grow without bound. Shorten --t-end, or raise --max-events if this is expected",
                state_text(state),
                shown_time = Shown(*time)
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// The state of one running trajectory of the direct method.
pub struct Trajectory<'m> {
    compiled: &'m CompiledModel,
    params: &'m [f64],
    /// Copy numbers.
    pub x: Vec<i64>,
    /// Current propensities.
    pub a: Vec<f64>,
    /// Their running sum.
    pub a0: f64,
    /// Current time.
    pub t: f64,
    /// Events so far.
    pub events: u64,
    since_resync: u32,
    index: usize,
    /// For large networks, partial sums of the propensities for O(log R) selection and updates.
    tree: Option<SumTree>,
}

/// Above this many reactions the engine selects through a binary tree of partial sums instead of
/// a linear scan.
pub const SUM_TREE_THRESHOLD: usize = 64;

/// A complete binary tree of partial sums over the propensities: selection and the update of one
/// propensity take O(log R), and the total is exact (re-summed along each updated path, so it
/// does not drift).
#[derive(Debug, Clone)]
struct SumTree {
    /// `nodes[1]` is the total; the leaves start at `nodes[width]`.
    nodes: Vec<f64>,
    width: usize,
}

impl SumTree {
    fn new(a: &[f64]) -> SumTree {
        let width = a.len().next_power_of_two();
        let mut nodes = vec![0.0; 2 * width];
        nodes[width..width + a.len()].copy_from_slice(a);
        for n in (1..width).rev() {
            nodes[n] = nodes[2 * n] + nodes[2 * n + 1];
        }
        SumTree { nodes, width }
    }
    fn total(&self) -> f64 {
        self.nodes[1]
    }
    fn set(&mut self, i: usize, v: f64) {
        let mut n = self.width + i;
        self.nodes[n] = v;
        while n > 1 {
            n /= 2;
            self.nodes[n] = self.nodes[2 * n] + self.nodes[2 * n + 1];
        }
    }
    /// The leaf where the cumulative sum first exceeds `r` (`0 <= r < total`).
    fn find(&self, mut r: f64) -> usize {
        let mut n = 1;
        while n < self.width {
            let left = self.nodes[2 * n];
            if r < left {
                n *= 2;
            } else {
                r -= left;
                n = 2 * n + 1;
            }
        }
        n - self.width
    }
}

impl<'m> Trajectory<'m> {
    /// A trajectory at the model's initial state and time 0.
    pub fn new(
        compiled: &'m CompiledModel,
        params: &'m [f64],
        index: usize,
    ) -> Result<Self, SimError> {
        if !compiled.kernels().simulation {
            return Err(SimError::Options(
                "the model was compiled without the simulation kernels: compile it with \
                 CompiledModel::new or Kernels::SIMULATION"
                    .into(),
            ));
        }
        let x = compiled.model.initial_state();
        let mut a = vec![0.0; compiled.n_reactions()];
        let a0 = compiled.propensities(&x, params, 0.0, &mut a);
        let tr = Trajectory {
            compiled,
            params,
            x,
            a,
            a0,
            t: 0.0,
            events: 0,
            since_resync: 0,
            index,
            tree: None,
        };
        tr.check_propensities()?;
        let mut tr = tr;
        tr.rebuild_tree();
        Ok(tr)
    }

    /// Rebuilds the partial sums (large networks only) after all propensities changed.
    fn rebuild_tree(&mut self) {
        if self.a.len() > SUM_TREE_THRESHOLD {
            let tree = SumTree::new(&self.a);
            self.a0 = tree.total();
            self.tree = Some(tree);
        }
    }

    fn named_state(&self) -> Vec<(String, i64)> {
        named_state(&self.compiled.model, &self.x)
    }

    /// Counts only grow past 2^63 - 1 by wrapping around to negative values (reactions that take
    /// a count below zero are caught when they fire), and an infinite propensity is not caught
    /// when it fires: both are checked where the state is recorded.
    fn check_recorded_state(&self, time: f64) -> Result<(), SimError> {
        match count_overflow(&self.compiled.model, &self.x, time, self.index) {
            Some(e) => Err(e),
            None => self.check_propensities(),
        }
    }

    /// The error for a total propensity that is not finite.
    #[cold]
    fn non_finite_total(&self) -> SimError {
        self.check_propensities().err().unwrap_or_else(|| {
            overflowing_total(&self.compiled.model, &self.x, &self.a, self.t, self.index)
        })
    }

    /// The event limit was reached at `time`: a count that wrapped around on the way is the
    /// better explanation.
    #[cold]
    fn too_many_events(&self, limit: u64, time: f64) -> SimError {
        too_many_events(&self.compiled.model, &self.x, limit, time, self.index)
    }

    fn check_propensities(&self) -> Result<(), SimError> {
        match propensity_failure(&self.compiled.model, &self.x, &self.a, self.t, self.index) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The reaction whose cumulative propensity first exceeds `r` (with `0 <= r < a0`).
    #[inline]
    fn select(&self, r: f64) -> Option<usize> {
        let mut acc = 0.0;
        for (j, &v) in self.a.iter().enumerate() {
            acc += v;
            if r < acc {
                return Some(j);
            }
        }
        None
    }

    /// Fires reaction `j` at the current time and updates the propensities.
    #[inline(always)]
    pub fn fire(&mut self, j: usize) -> Result<(), SimError> {
        let delta = self
            .compiled
            .fire(j, &mut self.x, self.params, self.t, &mut self.a);
        self.account(j, delta)
    }

    /// Book-keeping after reaction `j` fired and changed the total by `delta`.
    #[inline(always)]
    fn account(&mut self, j: usize, delta: f64) -> Result<(), SimError> {
        // NaN from a negative or NaN propensity (an infinite one is caught at the next re-sum or
        // sampling time: testing for it here cost 2.5 % of a birth-death event).
        if delta.is_nan() {
            return Err(self.diagnose(j));
        }
        if let Some(tree) = &mut self.tree {
            for &d in &self.compiled.model.dependents[j] {
                tree.set(d, self.a[d]);
            }
            self.a0 = tree.total();
            self.events += 1;
            return Ok(());
        }
        let before = self.a0;
        self.a0 += delta;
        self.events += 1;
        self.since_resync += 1;
        if self.since_resync >= RESYNC_EVERY || self.a0 < 1e-6 * before {
            self.a0 = self.a.iter().sum();
            self.since_resync = 0;
            if !self.a0.is_finite() {
                return Err(self.non_finite_total());
            }
        }
        Ok(())
    }

    fn diagnose(&self, fired: usize) -> SimError {
        if let Some(e) = reactants_missing(&self.compiled.model, fired, &self.x, self.t, self.index)
        {
            return e;
        }
        if let Err(e) = self.check_propensities() {
            return e;
        }
        // Not reached: the fire kernel reports NaN only for one of the two above.
        let model = &self.compiled.model;
        let species = self
            .x
            .iter()
            .position(|&v| v < 0)
            .map_or_else(String::new, |i| model.species[i].name.clone());
        SimError::NegativeCount {
            reaction: model.reactions[fired].name.clone(),
            species,
            time: self.t,
            state: self.named_state(),
            trajectory: self.index,
        }
    }

    /// Runs the direct method up to `t_end`, calling `sample(k, x)` for every grid time
    /// `times[k]` with the state at that time. Stops early with an error when `stop` is raised.
    pub fn run_to(
        &mut self,
        times: &[f64],
        t_end: f64,
        max_events: u64,
        rng: &mut TrajectoryRng,
        mut sample: impl FnMut(usize, &[i64]),
        stop: &AtomicBool,
    ) -> Result<(), SimError> {
        let time_dependent = self.compiled.model.time_dependent;
        if !time_dependent && self.tree.is_none() {
            return self.run_direct(times, t_end, max_events, rng, sample, stop);
        }
        let mut next = times
            .iter()
            .position(|&g| g >= self.t)
            .unwrap_or(times.len());
        let mut next_sample = times.get(next).copied().unwrap_or(f64::INFINITY);
        // One comparison per event covers both the event limit and the periodic cancellation check.
        let mut checkpoint = max_events.min(self.events + 65_536);
        loop {
            let t_next = if time_dependent {
                let e: f64 = Exp1.sample(rng);
                self.waiting_time_dependent(e, t_end)?
            } else if self.a0 > 0.0 {
                let e: f64 = Exp1.sample(rng);
                self.t + e / self.a0
            } else {
                f64::INFINITY
            };
            while next_sample < t_next {
                self.check_recorded_state(next_sample)?;
                sample(next, &self.x);
                next += 1;
                next_sample = times.get(next).copied().unwrap_or(f64::INFINITY);
            }
            if t_next > t_end {
                self.t = t_end;
                return Ok(());
            }
            self.t = t_next;
            if self.events >= checkpoint {
                if self.events >= max_events {
                    return Err(self.too_many_events(max_events, self.t));
                }
                if stop.load(Ordering::Relaxed) {
                    return Err(SimError::Cancelled);
                }
                checkpoint = max_events.min(self.events + 65_536);
            }
            if time_dependent {
                // The propensities at the event time choose the reaction.
                self.a0 = self
                    .compiled
                    .propensities(&self.x, self.params, self.t, &mut self.a);
                self.check_propensities()?;
                self.rebuild_tree();
            }
            if let Some(tree) = &self.tree {
                let j = tree.find(rng.random::<f64>() * self.a0);
                // Rounding can land on an empty leaf at a boundary: take the last non-empty one
                // before it, which is where the cumulative sum reached r.
                let j = if self.a[j] > 0.0 {
                    j
                } else {
                    let before = self.a[..j].iter().rposition(|&v| v > 0.0);
                    before
                        .or_else(|| self.a.iter().position(|&v| v > 0.0))
                        .unwrap_or(j)
                };
                self.fire(j)?;
                continue;
            }
            // Only time-dependent networks reach this point without a tree; their propensities
            // were just recomputed at the event, so the total is exact and a scan selects.
            let r = rng.random::<f64>() * self.a0;
            let j = self
                .select(r)
                .unwrap_or_else(|| self.a.iter().rposition(|&v| v > 0.0).unwrap_or(0));
            self.fire(j)?;
        }
    }

    /// The direct method's hot loop for time-independent networks of up to
    /// [`SUM_TREE_THRESHOLD`] reactions. Time, total and event count live in locals (the JIT
    /// kernel writes through raw pointers, so fields of `self` would be reloaded after every call)
    /// and are written back on every exit.
    fn run_direct(
        &mut self,
        times: &[f64],
        t_end: f64,
        max_events: u64,
        rng: &mut TrajectoryRng,
        mut sample: impl FnMut(usize, &[i64]),
        stop: &AtomicBool,
    ) -> Result<(), SimError> {
        let compiled = self.compiled;
        let params = self.params;
        let mut t = self.t;
        let mut a0 = self.a0;
        let mut events = self.events;
        let mut until_resync = RESYNC_EVERY.saturating_sub(self.since_resync).max(1);
        let mut next = times.iter().position(|&g| g >= t).unwrap_or(times.len());
        let mut next_sample = times.get(next).copied().unwrap_or(f64::INFINITY);
        let mut checkpoint = max_events.min(events + 65_536);
        let outcome = loop {
            let t_next = if a0 > 0.0 {
                let e: f64 = Exp1.sample(rng);
                t + e / a0
            } else {
                f64::INFINITY
            };
            while next_sample < t_next {
                self.check_recorded_state(next_sample)?;
                sample(next, &self.x);
                next += 1;
                next_sample = times.get(next).copied().unwrap_or(f64::INFINITY);
            }
            if t_next > t_end {
                t = t_end;
                break Ok(());
            }
            t = t_next;
            if events >= checkpoint {
                if events >= max_events {
                    break Err(None);
                }
                if stop.load(Ordering::Relaxed) {
                    break Err(Some(SimError::Cancelled));
                }
                checkpoint = max_events.min(events + 65_536);
            }
            let r = rng.random::<f64>() * a0;
            // SAFETY: x, a and params have the model's sizes.
            let fired = unsafe { compiled.step_unchecked(r, &mut self.x, params, t, &mut self.a) };
            let (j, delta) = match fired {
                Some(fired) => fired,
                None => {
                    // Rounding left a0 above the true sum (or it is not finite): re-sum and draw
                    // again.
                    a0 = self.a.iter().sum();
                    until_resync = RESYNC_EVERY;
                    if !a0.is_finite() {
                        self.t = t;
                        break Err(Some(self.non_finite_total()));
                    }
                    if a0 <= 0.0 {
                        continue;
                    }
                    let r = rng.random::<f64>() * a0;
                    let a = &self.a;
                    let j = self
                        .select(r)
                        .unwrap_or_else(|| a.iter().rposition(|&v| v > 0.0).unwrap_or(0));
                    (j, compiled.fire(j, &mut self.x, params, t, &mut self.a))
                }
            };
            if delta.is_nan() {
                self.t = t;
                break Err(Some(self.diagnose(j)));
            }
            let before = a0;
            a0 += delta;
            events += 1;
            until_resync -= 1;
            if until_resync == 0 || a0 < 1e-6 * before {
                a0 = self.a.iter().sum();
                until_resync = RESYNC_EVERY;
            }
        };
        self.t = t;
        self.a0 = a0;
        self.events = events;
        self.since_resync = RESYNC_EVERY - until_resync;
        match outcome {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(e),
            Err(None) => Err(self.too_many_events(max_events, t)),
        }
    }

    /// The next event time when propensities read time: the `s` at which the integrated total
    /// propensity `∫_t^s a0(x, u) du` reaches `e` (the state is fixed until then), found by
    /// adaptive Simpson quadrature and bisection; infinity if that is beyond `t_end`.
    ///
    /// A propensity that becomes negative, infinite or NaN at a quadrature point before the event
    /// (`sqrt(1 - t)` past t = 1) stops the trajectory at the first such time found (bisected
    /// from the last event, where all were valid): it was read as 0, and a NaN made the total 0,
    /// so every reaction stopped silently.
    #[cold]
    fn waiting_time_dependent(&mut self, e: f64, t_end: f64) -> Result<f64, SimError> {
        let (compiled, params, x, index) = (self.compiled, self.params, &self.x, self.index);
        let model = &compiled.model;
        let mut scratch = vec![0.0; self.a.len()];
        // The propensities at time u, and why they cannot drive the simulation, if they cannot.
        let failure_at = |u: f64, a: &mut [f64]| {
            let total = compiled.propensities(x, params, u, a);
            (total, propensity_failure(model, x, a, u, index))
        };
        // The earliest time at which the propensities were found invalid, with why.
        let mut invalid: Option<(f64, SimError)> = None;
        let mut a0 = |u: f64| match failure_at(u, &mut scratch) {
            (total, None) => total,
            (_, Some(e)) => {
                if invalid.as_ref().is_none_or(|(at, _)| u < *at) {
                    invalid = Some((u, e));
                }
                0.0
            }
        };
        let simpson = |a0: &mut dyn FnMut(f64) -> f64, lo: f64, hi: f64| {
            (hi - lo) / 6.0 * (a0(lo) + 4.0 * a0(0.5 * (lo + hi)) + a0(hi))
        };
        let mut s = self.t;
        let mut acc = 0.0;
        let mut h = ((t_end - self.t) / 64.0).max(1e-12);
        let mut event = f64::INFINITY;
        while s < t_end {
            h = h.min(t_end - s);
            let whole = simpson(&mut a0, s, s + h);
            let halves = simpson(&mut a0, s, s + 0.5 * h) + simpson(&mut a0, s + 0.5 * h, s + h);
            if (whole - halves).abs() > 1e-10 * halves.abs().max(1e-3) && h > 1e-9 * (1.0 + s.abs())
            {
                h *= 0.5;
                continue;
            }
            if acc + halves >= e {
                // The event lies in [s, s + h]: bisect on the integral from s.
                let (mut lo, mut hi) = (s, s + h);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    let part = simpson(&mut a0, s, 0.5 * (s + mid))
                        + simpson(&mut a0, 0.5 * (s + mid), mid);
                    if acc + part >= e { hi = mid } else { lo = mid }
                }
                event = hi;
                break;
            }
            acc += halves;
            s += h;
            h *= 2.0;
        }
        let Some((mut hi, mut error)) = invalid.filter(|(at, _)| *at <= event.min(t_end)) else {
            return Ok(event);
        };
        let mut lo = self.t;
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            match failure_at(mid, &mut scratch) {
                (_, None) => lo = mid,
                (_, Some(e)) => (hi, error) = (mid, e),
            }
        }
        Err(error)
    }
}

/// What is wrong when `params` does not hold one value per parameter of `compiled`.
pub(crate) fn wrong_param_count(compiled: &CompiledModel, params: &[f64]) -> Option<String> {
    let expected = compiled.model.params.len();
    (params.len() != expected)
        .then(|| format!("expected {expected} parameter values, got {}", params.len()))
}

/// How soon an ensemble that started on fewer threads than cores first looks for idle ones
/// again: a core is often busy only for a moment (a kernel worker, the shell that started rxnc),
/// and `/proc/loadavg` counts it all the same. The wait then doubles up to [`GROW_AT_MOST_EVERY`].
const GROW_FIRST_AFTER: std::time::Duration = std::time::Duration::from_micros(100);
/// The longest wait between two looks for idle cores (a look costs a few microseconds).
const GROW_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

/// How many threads run an ensemble: [`IDLE_CORES`], or a number set by the user.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// [`WORKERS`] when neither `--threads` nor `RAYON_NUM_THREADS` set a number: as many threads as
/// there are idle cores when an ensemble starts.
const IDLE_CORES: usize = usize::MAX;

/// Runs ensembles on the calling thread only (the same as [`set_worker_threads`]`(1)`). Results
/// do not depend on it.
pub fn use_calling_thread_only() {
    set_worker_threads(1);
}

/// Sets how many threads run the trajectories of an ensemble, the calling thread included
/// (`rxnc --threads K`). By default: `RAYON_NUM_THREADS` if set (the variable rxnc's thread pool
/// used to read), else one per core that is idle when the ensemble starts (see
/// [`worker_threads`]). Results do not depend on it: each trajectory has its own random stream.
///
/// # Panics
/// If `threads` is 0.
pub fn set_worker_threads(threads: usize) {
    assert!(threads > 0, "at least one thread");
    WORKERS.store(threads, Ordering::Relaxed);
}

/// The number of threads the next ensemble starts on: the number set with
/// [`set_worker_threads`] or `RAYON_NUM_THREADS`, else one per idle core (see [`ThreadBudget`]).
pub fn worker_threads() -> usize {
    thread_budget().start
}

/// How many threads an ensemble starts on, and how many it may grow to while it runs.
///
/// Unless the user set a number, an ensemble starts on one thread per idle core and adds
/// threads when more cores fall idle. A core is idle if the system's count of runnable threads,
/// without the calling one, leaves it free (Linux: `/proc/loadavg`; elsewhere every core counts
/// as idle). A thread started on a core that another process keeps busy only takes turns with
/// it, and the ensemble may wait for its last trajectory. Growing counts the calling thread's
/// own core as free (the count leaves the reader out), so beside one busy process on two cores
/// an ensemble adds a second thread at its first look: on the peer benchmark's gradient that was
/// as fast as starting on two threads and faster than staying on one (medians 3.91–3.97, 3.87–3.92
/// and 4.17–4.18 ms; docs/performance.md, "Tenth session").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ThreadBudget {
    start: usize,
    at_most: usize,
}

impl ThreadBudget {
    fn exactly(threads: usize) -> ThreadBudget {
        ThreadBudget {
            start: threads,
            at_most: threads,
        }
    }
}

impl From<usize> for ThreadBudget {
    fn from(threads: usize) -> ThreadBudget {
        ThreadBudget::exactly(threads)
    }
}

fn thread_budget() -> ThreadBudget {
    let mut set = WORKERS.load(Ordering::Relaxed);
    if set == 0 {
        set = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&k| k > 0)
            .unwrap_or(IDLE_CORES);
        WORKERS.store(set, Ordering::Relaxed);
    }
    if set != IDLE_CORES {
        return ThreadBudget::exactly(set);
    }
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    ThreadBudget {
        start: idle_cores().clamp(1, cores),
        at_most: cores,
    }
}

/// The cores no runnable thread other than the calling one is waiting for.
fn idle_cores() -> usize {
    match busy_cores_elsewhere() {
        Some(busy) => online_cores().saturating_sub(busy),
        None => usize::MAX,
    }
}

/// How many threads other than the calling one are runnable right now, machine-wide.
#[cfg(target_os = "linux")]
fn busy_cores_elsewhere() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(runnable_in_loadavg(&text)?.saturating_sub(1))
}

/// The running count of a `/proc/loadavg` line ("0.52 0.58 0.59 2/180 4711": 2), which
/// includes the reader.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn runnable_in_loadavg(text: &str) -> Option<usize> {
    let (running, _total) = text.split_whitespace().nth(3)?.split_once('/')?;
    running.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn busy_cores_elsewhere() -> Option<usize> {
    None
}

/// The cores the machine has online (which `/proc/loadavg`'s count is spread over).
#[cfg(target_os = "linux")]
fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

#[cfg(not(target_os = "linux"))]
fn online_cores() -> usize {
    usize::MAX
}

/// `range.map(f).collect::<Result<Vec<T>, E>>()` on threads started for this call (as many as
/// [`ThreadBudget`] allows), which take chunks of the range from a shared counter until none is
/// left. Starting the threads costs tens of microseconds per call; a persistent pool (rayon's,
/// used before) cost 0.3 ms of CPU at the start of every process, and its idle workers spun
/// after every loop, which a short command (`rxnc grad` on the peer benchmark: 3 ms in all) pays
/// in full.
///
/// The error is that of the first failing index, as on one thread, and once an index has failed no new chunk
/// is started (a runaway trajectory does not make the others run to their event limit first).
pub(crate) fn try_map_range<T: Send, E: Send>(
    range: std::ops::Range<usize>,
    f: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    try_map_range_on(thread_budget(), range, f)
}

fn try_map_range_on<T: Send, E: Send>(
    threads: impl Into<ThreadBudget>,
    range: std::ops::Range<usize>,
    f: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    // Chunks are handed out in order and a chunk runs to its end or to its own first error, so
    // every index below a failing one has been computed: the first error in order is the first.
    map_range_on(threads, range, f, Result::is_err)
        .into_iter()
        .collect()
}

/// `range.map(f)` on `threads` threads, stopping after a value for which `stop_after` holds:
/// no new chunk is started then, and the value's own chunk ends with it (the result then lacks
/// some indices after it).
fn map_range_on<T: Send>(
    threads: impl Into<ThreadBudget>,
    range: std::ops::Range<usize>,
    f: impl Fn(usize) -> T + Sync,
    stop_after: impl Fn(&T) -> bool + Sync,
) -> Vec<T> {
    let threads = threads.into();
    let len = range.len();
    let start = threads.start.min(len);
    let at_most = threads.at_most.min(len);
    let stopped = AtomicBool::new(false);
    let run = |indices: std::ops::Range<usize>| {
        // A panic stops the other threads too (it reaches the caller once they are done).
        let _stop_on_panic = StopOnPanic(&stopped);
        let mut values = Vec::with_capacity(indices.len());
        for n in indices {
            let value = f(n);
            let stop = stop_after(&value);
            values.push(value);
            if stop {
                stopped.store(true, Ordering::Relaxed);
                break;
            }
        }
        values
    };
    if at_most <= 1 {
        return run(range);
    }
    // Chunks small enough that the threads finish together (trajectories are uneven), large
    // enough that the shared counter is rarely touched.
    let chunk = (len / (at_most * 64)).max(1);
    let next = AtomicUsize::new(0);
    // `stopped` is read before a chunk is taken, and a chunk taken is always run: every chunk
    // below a failing one was taken before it, so it is run too.
    let claim = || {
        if stopped.load(Ordering::Relaxed) {
            return None;
        }
        let lo = next.fetch_add(chunk, Ordering::Relaxed);
        (lo < len).then(|| lo..(lo + chunk).min(len))
    };
    let work_left = || next.load(Ordering::Relaxed) < len && !stopped.load(Ordering::Relaxed);
    let work = || {
        let mut done = Vec::new();
        while let Some(indices) = claim() {
            done.push((
                indices.start,
                run(range.start + indices.start..range.start + indices.end),
            ));
        }
        done
    };
    // What the helpers hand back: their chunks, or the panic that stopped one. They are not
    // joined: a join also waits for the thread to exit, and this thread resumed 60-80 µs after
    // running out of chunks while the helpers had finished within 4 µs of it. The scope's end
    // waits for their closures only (measured against joining and against two other ways of
    // waiting in docs/performance.md, "Tenth session").
    let handed = Mutex::new(Vec::new());
    let mut chunks = std::thread::scope(|scope| {
        let mut helpers = 0;
        // This thread works too, on its core; helpers are started away from that core (see
        // `leave_cpu`). Returns whether every thread asked for could be started.
        let add_helpers = |helpers: &mut usize, count: usize| {
            let here = current_cpu();
            let handed = &handed;
            let mut added = 0;
            for _ in 0..count {
                let helper = std::thread::Builder::new().spawn_scoped(scope, move || {
                    leave_cpu(here);
                    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                    (handed.lock())
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(done);
                });
                // A thread that cannot be started (a limit on processes): the others do the work.
                if helper.is_err() {
                    break;
                }
                added += 1;
            }
            *helpers += added;
            if added > 0 {
                // A helper queued on this core runs now and moves itself (`leave_cpu`).
                std::thread::yield_now();
            }
            added == count
        };
        let mut can_grow = add_helpers(&mut helpers, start.saturating_sub(1));
        let mut chunks = Vec::new();
        let mut wait = GROW_FIRST_AFTER;
        let mut look_again = std::time::Instant::now() + wait;
        while let Some(indices) = claim() {
            let values = run(range.start + indices.start..range.start + indices.end);
            chunks.push((indices.start, values));
            // More helpers as cores fall idle.
            let now = std::time::Instant::now();
            if can_grow && helpers + 1 < at_most && now >= look_again && work_left() {
                let more = idle_cores().min(at_most - 1 - helpers);
                can_grow = add_helpers(&mut helpers, more);
                wait = (2 * wait).min(GROW_AT_MOST_EVERY);
                look_again = now + wait;
            }
        }
        chunks
    });
    let handed = handed.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut panic = None;
    for done in handed {
        match done {
            Ok(more) => chunks.extend(more),
            Err(payload) => panic = panic.or(Some(payload)),
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    chunks.sort_unstable_by_key(|&(lo, _)| lo);
    chunks.into_iter().flat_map(|(_, values)| values).collect()
}

/// Sets the flag it holds if dropped during a panic.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The core the calling thread runs on, if the system says.
#[cfg(target_os = "linux")]
fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(not(target_os = "linux"))]
fn current_cpu() -> Option<usize> {
    None
}

/// Moves the calling thread off core `cpu` (where the thread that started it is working), then
/// lets it run anywhere it could before.
///
/// Linux can queue a new thread on its parent's core (41 of 50 threads in a probe on this
/// project's 2-core VMs), and with the parent busy there, the thread waited for the load balancer
/// to move it: 0.5–0.6 ms, a sixth of a whole `rxnc grad` on the peer benchmark
/// (docs/performance.md, "Tenth session").
/// The parent yields once after starting its helpers, so a helper queued behind it runs at
/// once and moves itself here (tens of microseconds).
#[cfg(target_os = "linux")]
fn leave_cpu(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    if current_cpu() != Some(cpu) || cpu >= libc::CPU_SETSIZE as usize {
        return;
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain data; the calls get its size, and `cpu` is below CPU_SETSIZE.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
            return;
        }
        let mut elsewhere = allowed;
        libc::CPU_CLR(cpu, &mut elsewhere);
        if libc::CPU_COUNT(&elsewhere) == 0 {
            return;
        }
        // Should restoring fail, the helper only keeps off one core for its short life.
        if libc::sched_setaffinity(0, size, &elsewhere) == 0 {
            libc::sched_setaffinity(0, size, &allowed);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn leave_cpu(_cpu: Option<usize>) {}

/// Trajectories sampled on a common time grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Ensemble {
    /// The sampling times.
    pub times: Vec<f64>,
    /// Species names, in state order.
    pub species: Vec<String>,
    /// Number of trajectories.
    pub trajectories: usize,
    /// Copy numbers, indexed `[trajectory][time][species]`.
    pub data: Vec<i64>,
    /// Total number of events over all trajectories.
    pub events: u64,
}

/// Why [`Ensemble::run_in_batches`] stopped.
#[derive(Debug)]
pub enum BatchError<E> {
    /// A trajectory failed (or the options are invalid).
    Simulation(SimError),
    /// The sink refused a batch.
    Sink(E),
}

impl Ensemble {
    /// Runs `options.trajectories` exact trajectories in parallel.
    pub fn run(
        compiled: &CompiledModel,
        params: &[f64],
        options: &SimOptions,
    ) -> Result<Ensemble, SimError> {
        Self::run_observed(compiled, params, options, &|| {})
    }

    /// Like [`Ensemble::run`], calling `done` as each trajectory finishes (for progress bars).
    pub fn run_observed(
        compiled: &CompiledModel,
        params: &[f64],
        options: &SimOptions,
        done: &(dyn Fn() + Sync),
    ) -> Result<Ensemble, SimError> {
        options.validate()?;
        if let Some(why) = wrong_param_count(compiled, params) {
            return Err(SimError::Options(why));
        }
        Self::run_range(compiled, params, options, 0..options.trajectories, done)
    }

    /// Runs the ensemble of `options` in batches of at most `batch` consecutive trajectories and
    /// hands each batch to `sink` in order, with the index of its first trajectory, so that memory
    /// holds one batch rather than the whole ensemble (`rxnc simulate` writes millions of
    /// trajectories this way). The trajectories are the same, bit for bit, as [`Ensemble::run`]'s:
    /// trajectory `first + n` of the ensemble is trajectory `n` of its batch. Stops at the first
    /// batch that fails to simulate or that `sink` refuses; returns the number of events.
    ///
    /// ```
    /// use rxnc::engine::{Ensemble, SimOptions};
    ///
    /// let model = rxnc::Model::parse("bd.rxn", "species X\n0 -> X @ 10\nX -> 0 @ 1\n").unwrap();
    /// let compiled = rxnc::jit::CompiledModel::new(&model.ir).unwrap();
    /// let options = SimOptions { t_end: 5.0, every: 1.0, trajectories: 10, ..SimOptions::default() };
    /// let whole = Ensemble::run(&compiled, &[], &options).unwrap();
    /// let mut seen = 0;
    /// Ensemble::run_in_batches(&compiled, &[], &options, 3, &|| {}, |first, batch| {
    ///     assert_eq!(first, seen);
    ///     for n in 0..batch.trajectories {
    ///         assert_eq!(batch.state(n, 5), whole.state(first + n, 5));
    ///     }
    ///     seen += batch.trajectories;
    ///     Ok::<(), ()>(())
    /// })
    /// .unwrap();
    /// assert_eq!(seen, 10);
    /// ```
    pub fn run_in_batches<E>(
        compiled: &CompiledModel,
        params: &[f64],
        options: &SimOptions,
        batch: usize,
        done: &(dyn Fn() + Sync),
        mut sink: impl FnMut(usize, &Ensemble) -> Result<(), E>,
    ) -> Result<u64, BatchError<E>> {
        options.validate().map_err(BatchError::Simulation)?;
        if let Some(why) = wrong_param_count(compiled, params) {
            return Err(BatchError::Simulation(SimError::Options(why)));
        }
        let batch = batch.max(1);
        let mut events = 0;
        for first in (0..options.trajectories).step_by(batch) {
            let range = first..(first + batch).min(options.trajectories);
            let ensemble = Self::run_range(compiled, params, options, range, done)
                .map_err(BatchError::Simulation)?;
            events += ensemble.events;
            sink(first, &ensemble).map_err(BatchError::Sink)?;
        }
        Ok(events)
    }

    /// The trajectories with indices in `range` (their random streams are keyed by the index).
    fn run_range(
        compiled: &CompiledModel,
        params: &[f64],
        options: &SimOptions,
        range: std::ops::Range<usize>,
        done: &(dyn Fn() + Sync),
    ) -> Result<Ensemble, SimError> {
        let times = options.grid();
        let ns = compiled.n_species();
        let stop = AtomicBool::new(false);
        let (first, count) = (range.start, range.len());
        // Each trajectory writes its samples straight into its slice of the ensemble.
        let per_trajectory = times.len() * ns;
        let mut data = vec![0i64; count * per_trajectory];
        let work = |(index, out): (usize, &mut [i64])| {
            let mut rng = stream_rng(options.seed, index as u64);
            let run = Trajectory::new(compiled, params, index).and_then(|mut tr| {
                tr.run_to(
                    &times,
                    options.t_end,
                    options.max_events,
                    &mut rng,
                    |k, x| out[k * ns..(k + 1) * ns].copy_from_slice(x),
                    &stop,
                )?;
                Ok(tr.events)
            });
            if run.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            done();
            run
        };
        // Each trajectory's slice of `data`, handed to whichever thread runs it.
        let mut slices: Vec<std::sync::Mutex<&mut [i64]>> = Vec::with_capacity(count);
        let mut rest = data.as_mut_slice();
        for _ in 0..count {
            let (slice, after) = std::mem::take(&mut rest).split_at_mut(per_trajectory);
            slices.push(std::sync::Mutex::new(slice));
            rest = after;
        }
        let threads = options
            .threads
            .map_or_else(thread_budget, ThreadBudget::exactly);
        // Every trajectory reports (the others are cancelled through `stop`): no early stop here.
        let results: Vec<Result<u64, SimError>> = map_range_on(
            threads,
            0..count,
            |n| {
                let mut out = slices[n].lock().unwrap_or_else(|e| e.into_inner());
                work((first + n, &mut out))
            },
            |_| false,
        );
        drop(slices);
        let mut events = 0;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(e) => events += e,
                Err(SimError::Cancelled) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let species = compiled
            .model
            .species
            .iter()
            .map(|s| s.name.clone())
            .collect();
        Ok(Ensemble {
            times,
            species,
            trajectories: count,
            data,
            events,
        })
    }

    /// The state of trajectory `n` at time index `k`.
    pub fn state(&self, n: usize, k: usize) -> &[i64] {
        let ns = self.species.len();
        let base = (n * self.times.len() + k) * ns;
        &self.data[base..base + ns]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index once, in order, whatever the number of threads and however uneven the work.
    #[test]
    fn map_range_keeps_order_on_any_number_of_threads() {
        let uneven = |n: usize| {
            let spin = if n.is_multiple_of(7) { 20_000 } else { 10 };
            (0..spin).fold(n as u64, |h, k| h.wrapping_mul(31).wrapping_add(k))
        };
        for range in [0..0, 5..6, 3..40, 100..1100] {
            let serial: Vec<u64> = range.clone().map(uneven).collect();
            for threads in 1..=4 {
                assert_eq!(
                    map_range_on(threads, range.clone(), uneven, |_| false),
                    serial
                );
            }
            // Starting on one thread and growing onto idle cores while it runs.
            let growing = ThreadBudget {
                start: 1,
                at_most: 4,
            };
            assert_eq!(
                map_range_on(growing, range.clone(), uneven, |_| false),
                serial
            );
        }
    }

    #[test]
    fn the_running_count_is_read_from_loadavg() {
        assert_eq!(runnable_in_loadavg("0.52 0.58 0.59 2/180 4711\n"), Some(2));
        assert_eq!(runnable_in_loadavg("0.00 0.01 0.05 1/65 999"), Some(1));
        assert_eq!(runnable_in_loadavg("0.52 0.58 0.59"), None);
        assert_eq!(runnable_in_loadavg("0.52 0.58 0.59 x/180 4711"), None);
        assert_eq!(runnable_in_loadavg(""), None);
    }

    /// On Linux the calling thread itself is runnable, so the count is there and at least one.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_reports_its_runnable_threads() {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap();
        assert!(runnable_in_loadavg(&text).is_some_and(|k| k >= 1), "{text}");
        assert!(worker_threads() >= 1);
    }

    /// A helper started on its parent's core moves to another one it may run on, and may run
    /// anywhere it could before once there.
    #[cfg(target_os = "linux")]
    #[test]
    fn leave_cpu_moves_off_the_core_and_keeps_the_affinity() {
        let mask = || {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: as in `leave_cpu`.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect::<Vec<_>>()
            }
        };
        std::thread::spawn(move || {
            let (before, here) = (mask(), current_cpu());
            leave_cpu(here);
            if before.len() > 1 {
                assert_ne!(current_cpu(), here, "allowed on {before:?}");
            }
            assert_eq!(mask(), before);
        })
        .join()
        .unwrap();
    }

    /// A panic in a worker reaches the caller.
    #[test]
    #[should_panic(expected = "trajectory 13")]
    fn map_range_propagates_panics() {
        map_range_on(2, 0..64, |n| assert!(n != 13, "trajectory {n}"), |_| false);
    }

    /// After a panic no new chunk starts, on any thread (each index takes a millisecond: the
    /// other 399 would take 0.2 s on two threads).
    #[test]
    fn a_panic_stops_the_other_threads() {
        let calls = AtomicUsize::new(0);
        let f = |n: usize| {
            calls.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                // Unwinds without the panic hook, whose printing of a backtrace (with
                // RUST_BACKTRACE) would let the other thread run tens of indices first.
                std::panic::resume_unwind(Box::new("trajectory 0"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map_range_on(2, 0..400, f, |_| false)
        }))
        .expect_err("index 0 panics");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"trajectory 0"));
        // The chunk (3 indices) of each thread that was running when index 0 panicked.
        assert!(calls.load(Ordering::Relaxed) <= 6, "{calls:?} calls");
    }

    /// The error of the first failing index, as on one thread; after it no new chunk starts.
    #[test]
    fn try_map_range_reports_the_first_error_and_stops() {
        let calls = AtomicUsize::new(0);
        let f = |n: usize| {
            calls.fetch_add(1, Ordering::Relaxed);
            if n == 10 || n == 500 { Err(n) } else { Ok(n) }
        };
        for threads in 1..=4 {
            calls.store(0, Ordering::Relaxed);
            assert_eq!(try_map_range_on(threads, 0..1000, f), Err(10));
            // Index 10 and what other threads had started: nowhere near the 1000 indices.
            assert!(calls.load(Ordering::Relaxed) < 100, "{threads} threads");
        }
        assert_eq!(
            try_map_range_on(2, 0..20, Ok::<_, ()>),
            Ok((0..20).collect())
        );
    }
}
