//! Fitting models to data: data files ([`data`]), losses with gradients from every estimator
//! ([`loss`]), and an Adam optimiser in transformed coordinates ([`fit`]). See `docs/fitting.md`.

pub mod data;
pub mod loss;
pub mod plot;

use crate::engine::{SimError, Trajectory, splitmix64, stream_rng, try_map_range};
use crate::estimators::{Estimator, GradOptions, run_timed};
use crate::ir::{self, RateLaw};
use crate::jit::CompiledModel;
use data::Data;
use loss::LossKind;
use rand::Rng;
use std::sync::atomic::AtomicBool;

/// Options of a fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Optimiser steps per restart (at most; a plateau of the loss stops earlier).
    pub steps: usize,
    /// Simulated trajectories per step (the pool that gives the loss value).
    pub trajectories: usize,
    /// How many of them carry tangents (the gradient); at most `trajectories`.
    pub tracked: usize,
    /// The gradient estimator.
    pub estimator: Estimator,
    /// The loss.
    pub loss: LossKind,
    /// Adam's initial learning rate, in transformed coordinates.
    pub lr: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// For stationary data: the burn-in horizon; `None` chooses it from the model's rates.
    pub t_end: Option<f64>,
    /// Independent starts (the first at the file's values, the others random inside bounds).
    pub restarts: usize,
    /// Events allowed per trajectory.
    pub max_events: u64,
}

/// One optimiser step, for traces and progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Restart index (0-based).
    pub restart: usize,
    /// Step index (0-based) within the restart.
    pub step: usize,
    /// The loss estimate at `params`.
    pub loss: f64,
    /// The parameters at which the loss was estimated.
    pub params: Vec<f64>,
}

/// The outcome of one restart.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartResult {
    /// Where it started (the file's values for the first restart).
    pub start: Vec<f64>,
    /// The fitted parameters (the average of the last iterates in transformed coordinates).
    pub params: Vec<f64>,
    /// The loss at them, estimated with common random numbers across restarts.
    pub loss: f64,
    /// Steps taken.
    pub steps: usize,
    /// Why it stopped: "plateau" or "steps".
    pub stopped: &'static str,
    /// Standard deviation of the parameters over the averaged iterates.
    pub iterate_sd: Vec<f64>,
}

/// The outcome of a fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitResult {
    /// Parameter names.
    pub names: Vec<String>,
    /// The starting values in the file.
    pub initial: Vec<f64>,
    /// The best restart's parameters.
    pub params: Vec<f64>,
    /// Its loss.
    pub loss: f64,
    /// Index of the best restart.
    pub best: usize,
    /// Every restart.
    pub restarts: Vec<RestartResult>,
    /// Whether each parameter was fitted: one that can affect none of the data's columns
    /// (see [`ir::Model::params_affecting`]) stays at its initial value, with an uncertainty of
    /// NaN.
    pub fitted: Vec<bool>,
    /// Restarts after the first that failed (a random start where the model fails), each with
    /// why; the result is that of the others.
    pub failed_restarts: Vec<String>,
    /// An uncertainty for each parameter and how it was obtained.
    pub uncertainty: Vec<f64>,
    /// How `uncertainty` was computed.
    pub uncertainty_method: &'static str,
    /// Every step of every restart.
    pub trace: Vec<Step>,
    /// The loss used.
    pub loss_kind: LossKind,
    /// The observation times simulated (for stationary data, the burn-in horizon at the fit).
    pub times: Vec<f64>,
    /// Simulated events in all.
    pub events: u64,
    /// Refitted parameters of a parametric bootstrap, if one was run (filled by the caller of
    /// [`bootstrap`]).
    pub bootstrap: Vec<Vec<f64>>,
}

/// A fit failed.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// Unusable options.
    Options(String),
    /// A simulation failed.
    Simulation(SimError),
    /// The loss or its gradient became non-finite; the best parameters so far are kept.
    Diverged {
        /// What was not finite.
        what: String,
        /// The steps so far (best parameters recoverable from it).
        trace: Vec<Step>,
        /// The parameters with the lowest loss seen.
        best: Vec<f64>,
    },
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::Options(m) => f.write_str(m),
            FitError::Simulation(e) => write!(f, "{e}"),
            FitError::Diverged { what, .. } => write!(f, "the fit diverged: {what}"),
        }
    }
}

impl From<SimError> for FitError {
    fn from(e: SimError) -> Self {
        FitError::Simulation(e)
    }
}

/// Where a fit is, for messages: numbered from 0, as the rows of `--trace` and the JSON trace.
fn at(restart: usize, step: usize) -> String {
    format!("restart {restart}, step {step} (numbered as in --trace)")
}

/// How close to a bound (as a fraction of the range) a bounded parameter starts at most.
pub const LOGIT_MARGIN: f64 = 0.01;

/// How a parameter is optimised: in log space (a positive rate without bounds) or through a logit
/// of its position inside bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// θ = exp(u).
    Log,
    /// θ = lo + (hi − lo) / (1 + exp(−u)).
    Logit(f64, f64),
}

impl Transform {
    /// The transform of a model parameter.
    pub fn of(p: &ir::Param) -> Transform {
        match p.bounds {
            Some((lo, hi)) => Transform::Logit(lo, hi),
            None => Transform::Log,
        }
    }
    /// θ from u.
    pub fn forward(self, u: f64) -> f64 {
        match self {
            Transform::Log => u.exp(),
            Transform::Logit(lo, hi) => lo + (hi - lo) / (1.0 + (-u).exp()),
        }
    }
    /// u from θ. Inside bounds θ is taken at least 1% of the range from either bound: the
    /// logit is flat near them (dθ/du = range × 1e-9 at a start clamped 1e-9 inside), so a fit
    /// starting at a bound never left it.
    pub fn inverse(self, v: f64) -> f64 {
        match self {
            Transform::Log => v.max(f64::MIN_POSITIVE).ln(),
            Transform::Logit(lo, hi) => {
                let s = ((v - lo) / (hi - lo)).clamp(LOGIT_MARGIN, 1.0 - LOGIT_MARGIN);
                (s / (1.0 - s)).ln()
            }
        }
    }
    /// dθ/du.
    pub fn slope(self, u: f64) -> f64 {
        match self {
            Transform::Log => u.exp(),
            Transform::Logit(lo, hi) => {
                let s = 1.0 / (1.0 + (-u).exp());
                (hi - lo) * s * (1.0 - s)
            }
        }
    }
}

/// The burn-in horizon for stationary data: 10 / (the smallest non-zero first-order mass-action
/// rate constant at `params`), capped at 1000; 100 when the model has no first-order reaction.
pub fn burn_in(model: &ir::Model, params: &[f64]) -> f64 {
    let x: Vec<f64> = model.initial_state().iter().map(|&v| v as f64).collect();
    let slowest = model
        .reactions
        .iter()
        .filter(|r| {
            r.law == RateLaw::MassAction && r.reactants.iter().map(|&(_, s)| s).sum::<u32>() == 1
        })
        .map(|r| r.rate.eval(&x, params, 0.0))
        .filter(|k| k.is_finite() && *k > 0.0)
        .fold(f64::INFINITY, f64::min);
    if slowest.is_finite() {
        (10.0 / slowest).min(1000.0)
    } else {
        100.0
    }
}

/// A fit stops as diverged when a trajectory costs this many times the events it cost at the
/// start of the restart (and at least 10^5 events).
pub const RUNAWAY_FACTOR: f64 = 1000.0;

fn step_seed(seed: u64, restart: usize, step: usize) -> u64 {
    splitmix64(seed ^ splitmix64(((restart as u64) << 32) ^ step as u64 ^ 0xF17))
}

/// Simulates trajectories `range` forward only and returns the data columns at every time,
/// `[time][column][trajectory]`.
pub fn forward_samples(
    compiled: &CompiledModel,
    params: &[f64],
    leaves: &[ir::Expr],
    times: &[f64],
    seed: u64,
    max_events: u64,
    range: std::ops::Range<usize>,
) -> Result<Vec<Vec<Vec<f64>>>, SimError> {
    let ns = compiled.n_species();
    let t_end = times.last().copied().unwrap_or(0.0);
    let stop = AtomicBool::new(false);
    let states = try_map_range(range, |n| {
        let mut rng = stream_rng(seed, n as u64);
        let mut tr = Trajectory::new(compiled, params, n)?;
        let mut out = vec![0; times.len() * ns];
        tr.run_to(
            times,
            t_end,
            max_events,
            &mut rng,
            |k, x| out[k * ns..(k + 1) * ns].copy_from_slice(x),
            &stop,
        )?;
        Ok::<_, SimError>(out)
    })?;
    let mut pool = vec![vec![Vec::with_capacity(states.len()); leaves.len()]; times.len()];
    let mut xf = vec![0.0; ns];
    for s in &states {
        for (k, &t) in times.iter().enumerate() {
            for (v, &c) in xf.iter_mut().zip(&s[k * ns..(k + 1) * ns]) {
                *v = c as f64;
            }
            for (m, e) in leaves.iter().enumerate() {
                pool[k][m].push(e.eval(&xf, params, t));
            }
        }
    }
    Ok(pool)
}

/// The observation times to simulate at the given parameters.
fn observation_times(
    model: &ir::Model,
    data: &Data,
    options: &FitOptions,
    params: &[f64],
) -> Vec<f64> {
    match &data.times {
        Some(t) => t.clone(),
        None => vec![options.t_end.unwrap_or_else(|| burn_in(model, params))],
    }
}

/// The loss at `params` from `trajectories` forward-only simulations.
pub fn evaluate(
    compiled: &CompiledModel,
    data: &Data,
    options: &FitOptions,
    params: &[f64],
    seed: u64,
) -> Result<f64, SimError> {
    let times = observation_times(&compiled.model, data, options, params);
    let pool = forward_samples(
        compiled,
        params,
        &data.leaves,
        &times,
        seed,
        options.max_events,
        0..options.trajectories,
    )?;
    Ok(loss::value(
        data,
        options.loss,
        &loss::column_scales(data),
        &pool,
    ))
}

/// Fits the model's free parameters to the data, starting from the values in the model file.
/// `progress` is called after every step.
pub fn fit(
    compiled: &CompiledModel,
    data: &Data,
    options: &FitOptions,
    progress: &mut dyn FnMut(&Step),
) -> Result<FitResult, FitError> {
    fit_from(
        compiled,
        data,
        options,
        &compiled.model.param_values(),
        progress,
    )
}

/// Like [`fit`], with the first restart starting at `initial`.
pub fn fit_from(
    compiled: &CompiledModel,
    data: &Data,
    options: &FitOptions,
    initial: &[f64],
    progress: &mut dyn FnMut(&Step),
) -> Result<FitResult, FitError> {
    let model = &compiled.model;
    let np = model.params.len();
    if np == 0 {
        return Err(FitError::Options(
            "the model has no free parameters to fit; declare them with `param`".into(),
        ));
    }
    if options.trajectories < 2 || options.tracked < 2 || options.tracked > options.trajectories {
        return Err(FitError::Options(format!(
            "need 2 ≤ tracked ({}) ≤ trajectories ({})",
            options.tracked, options.trajectories
        )));
    }
    if let Some(why) = crate::estimators::unsupported(compiled, options.estimator) {
        return Err(FitError::Options(why));
    }
    if options.steps == 0 || options.restarts == 0 {
        return Err(FitError::Options(
            "--steps and --restarts must be at least 1".into(),
        ));
    }
    if let Some(t) = &data.times
        && t.last().is_none_or(|&t| t <= 0.0)
    {
        return Err(FitError::Options(
            "every row of the data is at time 0, where the state is the model's initial state; give observations at later times".into(),
        ));
    }
    let transforms: Vec<Transform> = model.params.iter().map(Transform::of).collect();
    if initial.len() != model.params.len() {
        return Err(FitError::Options(format!(
            "expected {} initial values, got {}",
            model.params.len(),
            initial.len()
        )));
    }
    let initial = initial.to_vec();
    // Parameters the data cannot see are held: noisy gradients would move them (Adam scales every
    // step to the learning rate) and report a tight ± for a value the data says nothing about.
    let fitted = model.params_affecting(&data.leaves);
    if !fitted.contains(&true) {
        return Err(FitError::Options(format!(
            "no free parameter can affect the data's columns ({}): each reads only species that \
             no reaction depending on a parameter changes",
            data.columns.join(", ")
        )));
    }
    let scales = loss::column_scales(data);
    let mut trace = Vec::new();
    let mut restarts = Vec::new();
    let mut events = 0u64;
    let mut best_seen: (f64, Vec<f64>) = (f64::INFINITY, initial.clone());
    let eval_seed = splitmix64(options.seed ^ 0xE7A1);
    let mut failed_restarts = Vec::new();
    for r in 0..options.restarts {
        // One restart; a failing random restart (its start went where the model fails) is
        // reported and skipped, the others kept.
        let mut restart = || -> Result<RestartResult, FitError> {
            let mut start_rng = stream_rng(options.seed ^ 0x5747, r as u64);
            let mut u: Vec<f64> = transforms
                .iter()
                .zip(&initial)
                .zip(&fitted)
                .map(|((tr, &v), &fit)| {
                    if r == 0 || !fit {
                        return tr.inverse(v);
                    }
                    match *tr {
                        Transform::Log => {
                            tr.inverse(v * 10f64.powf(start_rng.random_range(-1.0..1.0)))
                        }
                        // Log-uniform inside positive bounds (rates), uniform otherwise.
                        Transform::Logit(lo, hi) if lo > 0.0 => {
                            tr.inverse(start_rng.random_range(lo.ln()..hi.ln()).exp())
                        }
                        Transform::Logit(lo, hi) => tr.inverse(start_rng.random_range(lo..hi)),
                    }
                })
                .collect();
            // θ from u, with the parameters that are not fitted exactly at their values (the start's
            // clamp and exp/ln would move them).
            let theta = |u: &[f64]| -> Vec<f64> {
                (transforms.iter().zip(u).zip(&fitted).zip(&initial))
                    .map(|(((t, &v), &fit), &held)| if fit { t.forward(v) } else { held })
                    .collect()
            };
            let start: Vec<f64> = if r == 0 { initial.clone() } else { theta(&u) };
            let (mut m1, mut m2) = (vec![0.0; np], vec![0.0; np]);
            let mut norms: Vec<f64> = Vec::new();
            let mut history: Vec<Vec<f64>> = Vec::new();
            let (mut ema, mut best_ema, mut last_improve) = (f64::NAN, f64::INFINITY, 0);
            let patience = (options.steps / 5).max(20);
            let mut stopped = "steps";
            let mut first_cost: Option<f64> = None;
            let mut taken = 0;
            for s in 0..options.steps {
                let params: Vec<f64> = if r == 0 && s == 0 {
                    initial.clone()
                } else {
                    theta(&u)
                };
                let times = observation_times(model, data, options, &params);
                let seed = step_seed(options.seed, r, s);
                let grad_options = GradOptions {
                    t_end: *times.last().unwrap_or(&0.0),
                    trajectories: options.tracked,
                    seed,
                    estimator: options.estimator,
                    max_events: options.max_events,
                };
                // A simulation failing at the file's values is the model's; later, the parameters'
                // (a step or a restart's start went where the model fails): the fit keeps its best.
                let failed = |e: SimError, trace: &mut Vec<Step>, best: &[f64]| {
                    if r == 0 && s == 0 {
                        FitError::Simulation(e)
                    } else {
                        // The simulation's own advice (about the model or `simulate
                        // --t-end`) is not the point here: the parameters are.
                        let text = e.to_string();
                        let what = text.split_once("; ").map_or(text.as_str(), |(w, _)| w);
                        FitError::Diverged {
                            what: format!("at {}, parameters {params:?}: {what}", at(r, s)),
                            trace: std::mem::take(trace),
                            best: best.to_vec(),
                        }
                    }
                };
                let tracked = match run_timed(
                    compiled,
                    &params,
                    &data.leaves,
                    &times,
                    &grad_options,
                    0..options.tracked,
                ) {
                    Ok(tracked) => tracked,
                    Err(e) => return Err(failed(e, &mut trace, &best_seen.1)),
                };
                events += tracked.events;
                // Runaway guard: the cost of a step grows with the rates; a fit whose parameters run
                // away would otherwise look hung long before any loss became non-finite.
                let per_trajectory = tracked.events as f64 / tracked.len() as f64;
                let baseline = *first_cost.get_or_insert(per_trajectory.max(1.0));
                if per_trajectory > (RUNAWAY_FACTOR * baseline).max(1e5) {
                    return Err(FitError::Diverged {
                        what: format!(
                            "the parameters are running away: a trajectory now takes {:.0} events, {:.0} times as many as at the start of restart {r} (parameters {:?} at {})",
                            per_trajectory,
                            per_trajectory / baseline,
                            params,
                            at(r, s)
                        ),
                        trace: std::mem::take(&mut trace),
                        best: best_seen.1.clone(),
                    });
                }
                let mut pool = match forward_samples(
                    compiled,
                    &params,
                    &data.leaves,
                    &times,
                    seed,
                    options.max_events,
                    options.tracked..options.trajectories,
                ) {
                    Ok(pool) => pool,
                    Err(e) => return Err(failed(e, &mut trace, &best_seen.1)),
                };
                for (k, group) in pool.iter_mut().enumerate() {
                    for (m, col) in group.iter_mut().enumerate() {
                        col.extend((0..tracked.len()).map(|n| tracked.value(n, k, m)));
                    }
                }
                let bad = pool.iter().enumerate().find_map(|(k, group)| {
                    group.iter().enumerate().find_map(|(m, col)| {
                        col.iter().find(|v| !v.is_finite()).map(|v| (k, m, *v))
                    })
                });
                if let Some((k, m, v)) = bad {
                    return Err(FitError::Diverged {
                        what: format!(
                            "column `{}` evaluates to {v} in a simulated trajectory at t = {} ({}, parameters {:?}); an observable divides by zero or takes the log of 0",
                            data.columns[m],
                            times[k],
                            at(r, s),
                            params
                        ),
                        trace: std::mem::take(&mut trace),
                        best: best_seen.1.clone(),
                    });
                }
                let l = loss::value_and_gradient(
                    data,
                    options.loss,
                    &scales,
                    &pool,
                    &tracked,
                    options.estimator,
                    np,
                );
                let step = Step {
                    restart: r,
                    step: s,
                    loss: l.v,
                    params: params.clone(),
                };
                progress(&step);
                trace.push(step);
                if !l.v.is_finite() || l.d.iter().any(|g| !g.is_finite()) {
                    let what = if l.v.is_finite() {
                        format!(
                            "the {} gradient is not finite at {}",
                            options.estimator.name(),
                            at(r, s)
                        )
                    } else {
                        format!("the loss is {} at {}", crate::engine::Shown(l.v), at(r, s))
                    };
                    return Err(FitError::Diverged {
                        what,
                        trace: std::mem::take(&mut trace),
                        best: best_seen.1.clone(),
                    });
                }
                if l.v < best_seen.0 {
                    best_seen = (l.v, params.clone());
                }
                history.push(u.clone());
                taken = s + 1;
                // Gradient in transformed coordinates, clipped to 5× the median norm so far.
                let mut g: Vec<f64> = (0..np)
                    .map(|q| {
                        if fitted[q] {
                            l.d[q] * transforms[q].slope(u[q])
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norms.len() >= 5 {
                    let mut sorted = norms.clone();
                    sorted.sort_by(f64::total_cmp);
                    let limit = 5.0 * sorted[sorted.len() / 2];
                    if norm > limit && limit > 0.0 {
                        g.iter_mut().for_each(|v| *v *= limit / norm);
                    }
                }
                norms.push(norm);
                // Adam with a cosine schedule from lr down to lr/10.
                let lr = options.lr
                    * (0.1
                        + 0.9
                            * 0.5
                            * (1.0
                                + (std::f64::consts::PI * s as f64 / options.steps as f64).cos()));
                let (b1, b2) = (0.9f64, 0.999f64);
                for q in 0..np {
                    m1[q] = b1 * m1[q] + (1.0 - b1) * g[q];
                    m2[q] = b2 * m2[q] + (1.0 - b2) * g[q] * g[q];
                    let mh = m1[q] / (1.0 - b1.powi(s as i32 + 1));
                    let vh = m2[q] / (1.0 - b2.powi(s as i32 + 1));
                    u[q] -= lr * mh / (vh.sqrt() + 1e-12);
                    if let Transform::Log = transforms[q] {
                        u[q] = u[q].clamp(-700.0, 700.0);
                    }
                }
                // Plateau: the smoothed loss has not improved by 0.5% for `patience` steps.
                ema = if ema.is_nan() {
                    l.v
                } else {
                    0.9 * ema + 0.1 * l.v
                };
                if ema < best_ema * (1.0 - 5e-3) {
                    best_ema = ema;
                    last_improve = s;
                }
                if s - last_improve >= patience && s + 1 >= options.steps / 4 {
                    stopped = "plateau";
                    break;
                }
            }
            // Average the last iterates (at least 5, a fifth of the steps) in transformed coordinates,
            // the one after the last update included (with --steps 1 the update was discarded).
            history.push(u.clone());
            let window = (taken / 5).max(5).min(history.len());
            let tail = &history[history.len() - window..];
            let mean_u: Vec<f64> = (0..np)
                .map(|q| tail.iter().map(|h| h[q]).sum::<f64>() / window as f64)
                .collect();
            let params = theta(&mean_u);
            let iterate_sd: Vec<f64> = (0..np)
                .map(|q| {
                    let vals: Vec<f64> = tail.iter().map(|h| transforms[q].forward(h[q])).collect();
                    loss::mean_var(&vals).1.sqrt()
                })
                .collect();
            // The averaged parameters were never simulated: a failure there keeps the best so far.
            let final_loss =
                evaluate(compiled, data, options, &params, eval_seed).map_err(|e| {
                    FitError::Diverged {
                        what: format!("at the averaged parameters {params:?} of restart {r}: {e}"),
                        trace: std::mem::take(&mut trace),
                        best: best_seen.1.clone(),
                    }
                })?;
            Ok(RestartResult {
                start,
                params,
                loss: final_loss,
                steps: taken,
                stopped,
                iterate_sd,
            })
        };
        match restart() {
            Ok(result) => restarts.push(result),
            Err(FitError::Diverged {
                what, trace: kept, ..
            }) if r > 0 => {
                trace = kept;
                failed_restarts.push(format!("restart {r} failed: {what}"));
            }
            Err(e) => return Err(e),
        }
    }
    let best = (0..restarts.len())
        .min_by(|&a, &b| restarts[a].loss.total_cmp(&restarts[b].loss))
        .unwrap_or(0);
    let chosen = restarts[best].clone();
    if !chosen.loss.is_finite() {
        return Err(FitError::Diverged {
            what: format!(
                "the loss at the fitted parameters is {}",
                crate::engine::Shown(chosen.loss)
            ),
            trace,
            best: best_seen.1,
        });
    }
    // Uncertainty: the spread over restarts that reached a loss within 50% of the best when there
    // are at least two of them, otherwise the spread of the averaged iterates.
    let good: Vec<&RestartResult> = restarts
        .iter()
        .filter(|r| r.loss <= chosen.loss * 1.5 + 1e-12)
        .collect();
    let (uncertainty, uncertainty_method) = if good.len() >= 2 {
        (
            (0..np)
                .map(|q| {
                    loss::mean_var(&good.iter().map(|r| r.params[q]).collect::<Vec<_>>())
                        .1
                        .sqrt()
                })
                .collect(),
            "sd over the restarts whose final loss is within 50% of the best",
        )
    } else {
        (
            chosen.iterate_sd.clone(),
            "sd of the averaged optimiser iterates (optimisation noise, not a confidence interval)",
        )
    };
    let uncertainty = (uncertainty.into_iter().zip(&fitted))
        .map(|(u, &fit)| if fit { u } else { f64::NAN })
        .collect();
    let times = observation_times(model, data, options, &chosen.params);
    Ok(FitResult {
        names: model.params.iter().map(|p| p.name.clone()).collect(),
        initial,
        params: chosen.params.clone(),
        loss: chosen.loss,
        best,
        restarts,
        fitted,
        failed_restarts,
        uncertainty,
        uncertainty_method,
        trace,
        loss_kind: options.loss,
        times,
        events,
        bootstrap: Vec::new(),
    })
}

/// A parametric bootstrap of a fit: `replicates` synthetic data sets of the same shape as `data`
/// (rows per time; at a time course's several times, each synthetic trajectory gives one row per
/// time, as a real trajectory would) are simulated at `fitted` and refitted from `fitted` with one
/// restart each. Returns the refitted parameters of every replicate. `progress` gets the
/// replicate index with every step.
pub fn bootstrap(
    compiled: &CompiledModel,
    data: &Data,
    options: &FitOptions,
    fitted: &[f64],
    replicates: usize,
    progress: &mut dyn FnMut(usize, &Step),
) -> Result<Vec<Vec<f64>>, FitError> {
    let times = observation_times(&compiled.model, data, options, fitted);
    let rows = data.samples.iter().map(|g| g[0].len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(replicates);
    for b in 0..replicates {
        let seed = splitmix64(options.seed ^ splitmix64(0xB007 + b as u64));
        let pool = forward_samples(
            compiled,
            fitted,
            &data.leaves,
            &times,
            seed,
            options.max_events,
            0..rows,
        )?;
        let mut synthetic = data.clone();
        for (k, group) in synthetic.samples.iter_mut().enumerate() {
            for (m, col) in group.iter_mut().enumerate() {
                let n = col.len();
                *col = pool[k][m][..n].to_vec();
            }
        }
        let refit_options = FitOptions {
            restarts: 1,
            seed: splitmix64(seed),
            ..options.clone()
        };
        let r = fit_from(compiled, &synthetic, &refit_options, fitted, &mut |s| {
            progress(b, s)
        })?;
        out.push(r.params);
    }
    Ok(out)
}
