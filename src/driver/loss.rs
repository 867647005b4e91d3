//! Losses between simulated and observed samples, per observation time and data column, with
//! gradients from any estimator's records.
//!
//! Every loss is an average over (time, column) terms, each made dimensionless by the column's
//! scale `s` (the variance of all its observed values pooled over times; the squared mean if that
//! is zero; 1 if both are):
//!
//! - `w1`: W1(sim, obs) / √s, the 1-Wasserstein distance ∫ |F_sim(x) − F_obs(x)| dx between the
//!   empirical distributions (for counts, Σ_k |F_sim(k) − F_obs(k)|).
//! - `moments`: (μ_sim − μ_obs)² / s + (v_sim − v_obs)² / s², means and sample variances.
//! - `mean`: (μ_sim − μ_obs)² / s.
//!
//! Values come from the whole pool of simulated samples (forward-only and tracked); gradients from
//! the tracked records, through expectations: the CDF is F(x) = E[1{X ≤ x}], so
//! dW1 = d E[h(X)] with h(y) = ∫_y^∞ sign(F_sim(x) − F_obs(x)) dx (score, alt-path, fd); gs-st,
//! whose pathwise derivative of a step function is zero, uses the quantile coupling
//! W1 ≈ mean_i |x_(i) − q_obs((i + ½)/M)| with gradient mean_i sign(·) dx_(i).

use super::data::Data;
use crate::estimators::{Dual, Estimator, TimedRecords};

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// 1-Wasserstein distance between distributions.
    W1,
    /// Mean and variance matching.
    Moments,
    /// Squared error of means.
    Mean,
    /// `w1` at the times with 10 or more rows, `mean` at the others.
    Auto,
}

impl LossKind {
    /// All names, for help texts.
    pub const NAMES: [&'static str; 4] = ["w1", "moments", "mean", "auto"];
    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<LossKind> {
        match name {
            "w1" => Some(LossKind::W1),
            "moments" => Some(LossKind::Moments),
            "mean" => Some(LossKind::Mean),
            "auto" => Some(LossKind::Auto),
            _ => None,
        }
    }
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::W1 => "w1",
            LossKind::Moments => "moments",
            LossKind::Mean => "mean",
            LossKind::Auto => "auto",
        }
    }
    /// The contract's default: `w1` at a time with 10 or more rows, `mean` otherwise; `Auto` when
    /// the data has times of both kinds.
    pub fn default_for(data: &Data) -> LossKind {
        let rows = |g: &Vec<Vec<f64>>| g.first().map_or(0, Vec::len);
        let many = data
            .samples
            .iter()
            .filter(|g| rows(g) >= AUTO_W1_ROWS)
            .count();
        if many == data.samples.len() {
            LossKind::W1
        } else if many == 0 {
            LossKind::Mean
        } else {
            LossKind::Auto
        }
    }
    /// The loss used at a time with `rows` observations.
    fn at(self, rows: usize) -> LossKind {
        match self {
            LossKind::Auto if rows >= AUTO_W1_ROWS => LossKind::W1,
            LossKind::Auto => LossKind::Mean,
            // One row has no variance to match (taking it as 0 pulled the model's variance
            // towards 0).
            LossKind::Moments if rows < 2 => LossKind::Mean,
            k => k,
        }
    }
}

/// From this many rows at a time on, the default loss at that time is `w1`.
pub const AUTO_W1_ROWS: usize = 10;

/// Each column's scale: the variance of its observed values pooled over all times, or the squared
/// mean if the variance is zero, or 1.
pub fn column_scales(data: &Data) -> Vec<f64> {
    (0..data.columns.len())
        .map(|m| {
            let all: Vec<f64> = data
                .samples
                .iter()
                .flat_map(|g| g[m].iter().copied())
                .collect();
            let (mean, var) = mean_var(&all);
            if var > 0.0 {
                var
            } else if mean != 0.0 {
                mean * mean
            } else {
                1.0
            }
        })
        .collect()
}

/// Mean and sample variance (n − 1 denominator; 0 for fewer than two values).
pub fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The 1-Wasserstein distance ∫ |F_a − F_b| dx between two empirical distributions.
pub fn w1(a: &[f64], b: &[f64]) -> f64 {
    Potential::new(a, b).distance
}

/// The derivative of W1(sim, obs) with respect to moving one simulated sample, at each distinct
/// simulated value: under the quantile coupling, the sample of rank r moves against the observed
/// quantile at level (r + ½)/N, with slope sign(x − q); samples of one value share the average
/// of their slopes. (A point mass at 5 against data near 3 has slope 1, where the potential's
/// right derivative is 0.)
struct CoupledSlopes {
    values: Vec<f64>,
    slopes: Vec<f64>,
}

impl CoupledSlopes {
    fn new(sim: &[f64], obs: &[f64]) -> CoupledSlopes {
        let (sa, so) = (sorted(sim), sorted(obs));
        let (mut values, mut slopes): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let mut r = 0;
        while r < sa.len() {
            let x = sa[r];
            let tied = sa[r..].iter().take_while(|&&v| v == x).count();
            let total: f64 = (r..r + tied)
                .map(|rank| {
                    let level = (rank as f64 + 0.5) / sa.len() as f64;
                    let q = so[((level * so.len() as f64) as usize).min(so.len() - 1)];
                    (x - q).signum() * f64::from(x != q)
                })
                .sum();
            values.push(x);
            slopes.push(total / tied as f64);
            r += tied;
        }
        CoupledSlopes { values, slopes }
    }

    /// The slope at `y`, if a simulated sample has that value.
    fn at(&self, y: f64) -> Option<f64> {
        let i = self.values.binary_search_by(|v| v.total_cmp(&y)).ok()?;
        Some(self.slopes[i])
    }
}

/// W1 between two empirical distributions and the potential h(y) = ∫_y^∞ sign(F_a − F_b) dx.
struct Potential {
    /// Breakpoints (the union of both samples), ascending and distinct.
    xs: Vec<f64>,
    /// h at each breakpoint.
    h: Vec<f64>,
    /// sign(F_a − F_b) on [xs[i], xs[i+1]).
    sign: Vec<f64>,
    distance: f64,
}

impl Potential {
    fn new(a: &[f64], b: &[f64]) -> Potential {
        let (sa, sb) = (sorted(a), sorted(b));
        let mut xs: Vec<f64> = sa.iter().chain(&sb).copied().collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (na, nb) = (sa.len() as f64, sb.len() as f64);
        let mut sign = vec![0.0; xs.len()];
        let mut distance = 0.0;
        let (mut ia, mut ib) = (0, 0);
        for i in 0..xs.len().saturating_sub(1) {
            while ia < sa.len() && sa[ia] <= xs[i] {
                ia += 1;
            }
            while ib < sb.len() && sb[ib] <= xs[i] {
                ib += 1;
            }
            let diff = ia as f64 / na - ib as f64 / nb;
            distance += diff.abs() * (xs[i + 1] - xs[i]);
            sign[i] = if diff > 0.0 {
                1.0
            } else if diff < 0.0 {
                -1.0
            } else {
                0.0
            };
        }
        let mut h = vec![0.0; xs.len()];
        for i in (0..xs.len().saturating_sub(1)).rev() {
            h[i] = h[i + 1] + sign[i] * (xs[i + 1] - xs[i]);
        }
        Potential {
            xs,
            h,
            sign,
            distance,
        }
    }
    /// h(y) and h'(y).
    fn at(&self, y: f64) -> (f64, f64) {
        let n = self.xs.len();
        if n == 0 || y >= self.xs[n - 1] {
            return (0.0, 0.0);
        }
        if y < self.xs[0] {
            return (self.h[0], 0.0);
        }
        let i = self.xs.partition_point(|&x| x <= y) - 1;
        (
            self.h[i + 1] + self.sign[i] * (self.xs[i + 1] - y),
            -self.sign[i],
        )
    }
}

/// The loss from simulated samples only (no gradient). `pool[k][m]` holds the simulated values of
/// column `m` at time index `k`.
pub fn value(data: &Data, kind: LossKind, scales: &[f64], pool: &[Vec<Vec<f64>>]) -> f64 {
    let mut total = 0.0;
    let mut terms = 0;
    for (k, group) in data.samples.iter().enumerate() {
        for (m, obs) in group.iter().enumerate() {
            let sim = &pool[k][m];
            let s = scales[m];
            total += match kind.at(obs.len()) {
                LossKind::W1 => w1(sim, obs) / s.sqrt(),
                kind => {
                    let (ms, vs) = mean_var(sim);
                    let (mo, vo) = mean_var(obs);
                    let mut v = (ms - mo).powi(2) / s;
                    if kind == LossKind::Moments {
                        v += ((vs - vo) / s).powi(2);
                    }
                    v
                }
            };
            terms += 1;
        }
    }
    total / terms.max(1) as f64
}

/// The loss (from the pool) and its gradient (from the tracked records, whose values at time index
/// `k` are the leaves in the data's column order).
pub fn value_and_gradient(
    data: &Data,
    kind: LossKind,
    scales: &[f64],
    pool: &[Vec<Vec<f64>>],
    tracked: &TimedRecords,
    estimator: Estimator,
    np: usize,
) -> Dual {
    let mut grad = vec![0.0; np];
    let mut total = 0.0;
    let mut terms = 0;
    let add = |grad: &mut Vec<f64>, d: &[f64], c: f64| {
        for (g, v) in grad.iter_mut().zip(d) {
            *g += c * v;
        }
    };
    for (k, group) in data.samples.iter().enumerate() {
        for (m, obs) in group.iter().enumerate() {
            let sim = &pool[k][m];
            let s = scales[m];
            terms += 1;
            match kind.at(obs.len()) {
                LossKind::W1 => {
                    let pot = Potential::new(sim, obs);
                    total += pot.distance / s.sqrt();
                    if let Estimator::GsSt { .. } = estimator {
                        // Quantile coupling of the tracked samples with the observed quantiles.
                        let nt = tracked.len();
                        let mut order: Vec<usize> = (0..nt).collect();
                        order.sort_by(|&a, &b| {
                            tracked.value(a, k, m).total_cmp(&tracked.value(b, k, m))
                        });
                        let so = sorted(obs);
                        for (i, &n) in order.iter().enumerate() {
                            let level = (i as f64 + 0.5) / nt as f64;
                            let q = so[((level * so.len() as f64) as usize).min(so.len() - 1)];
                            let x = tracked.value(n, k, m);
                            let sign = if x > q {
                                1.0
                            } else if x < q {
                                -1.0
                            } else {
                                0.0
                            };
                            if sign != 0.0
                                && let Some(dx) = tracked.pathwise(n, k, m)
                            {
                                add(&mut grad, dx, sign / (nt as f64 * s.sqrt()));
                            }
                        }
                    } else {
                        // The potential's value for the score and alternative paths; for the
                        // direct dependence of a column on a parameter, the coupled slope (the
                        // potential's own slope is one-sided at the samples, which sit on its
                        // kinks: 0 where every sample has one value).
                        let slopes = CoupledSlopes::new(sim, obs);
                        let d = tracked.expectation(k, m, &|y| {
                            let (h, slope) = pot.at(y);
                            (h, slopes.at(y).unwrap_or(slope))
                        });
                        add(&mut grad, &d.d, 1.0 / s.sqrt());
                    }
                }
                kind => {
                    let (ms, vs) = mean_var(sim);
                    let (mo, vo) = mean_var(obs);
                    total += (ms - mo).powi(2) / s;
                    let d1 = tracked.expectation(k, m, &|y| (y, 1.0));
                    add(&mut grad, &d1.d, 2.0 * (ms - mo) / s);
                    if kind == LossKind::Moments {
                        total += ((vs - vo) / s).powi(2);
                        // var = n/(n−1) E[(f − μ)²]: d var ≈ n/(n−1) dE[(f − μ)²] with μ held
                        // (its own derivative enters times E[f − μ] = 0). Centred, so that large
                        // counts do not cancel as in dE[f²] − 2 μ dE[f].
                        let d2 = tracked.expectation(k, m, &|y| ((y - ms).powi(2), 2.0 * (y - ms)));
                        let n = sim.len() as f64;
                        let c = n / (n - 1.0).max(1.0);
                        let dv: Vec<f64> = d2.d.iter().map(|a| c * a).collect();
                        add(&mut grad, &dv, 2.0 * ((vs - vo) / s) / s);
                    }
                }
            }
        }
    }
    let terms = terms.max(1) as f64;
    Dual {
        v: total / terms,
        d: grad.into_iter().map(|g| g / terms).collect(),
    }
}
