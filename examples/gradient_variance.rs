//! Bias and variance of the gradient estimators on bimolecular association, from ten to ten
//! thousand reactions per trajectory: the measurement behind the figure in docs/gradients.md.
//!
//! For the objective `mean(C)` of `examples/association.rxn` at horizons from 0.01 to 1000, it runs
//! `gs-st` at six temperatures, `score`, `alt-path` and `fd` through the library API, each on a few
//! seeds of `TRAJECTORIES` trajectories, and reports for each parameter
//!
//! - the pooled estimate and its standard error,
//! - the standard deviation of a single trajectory's contribution, `stderr × sqrt(N)` (pooled over
//!   the seeds in quadrature),
//! - the exact derivative, from the chemical master equation of the model (a birth-death chain in
//!   the number of complexes, solved with its forward sensitivities by a matrix exponential), and
//!   the bias against it and against the score estimate.
//!
//! It writes `docs/figures/gradient_variance.csv` and draws `docs/figures/gradient_variance.svg`
//! (single-trajectory sd against the horizon) and `docs/figures/gradient_bias.svg` (estimates
//! against the exact derivative).
//!
//!   cargo run --release --example gradient_variance

use plotters::prelude::*;
use rxnc::Model;
use rxnc::estimators::{Estimator, GradOptions, Objective, estimate_gradient};
use rxnc::jit::CompiledModel;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MODEL: &str = "examples/association.rxn";
const OBJECTIVE: &str = "mean(C)";
const HORIZONS: [f64; 11] = [
    0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0,
];
const TEMPERATURES: [f64; 6] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0];
const TRAJECTORIES: usize = 2000;
const SEEDS: [u64; 3] = [1, 2, 3];

/// One estimator at one horizon, pooled over the seeds, per parameter.
struct Cell {
    estimator: Estimator,
    horizon: f64,
    /// Events simulated per trajectory (alternative paths included).
    events: f64,
    /// Seeds whose estimate was not finite.
    failed: usize,
    /// Per parameter: pooled estimate, its standard error, single-trajectory sd.
    params: Vec<Option<Pooled>>,
}

#[derive(Clone, Copy)]
struct Pooled {
    estimate: f64,
    stderr: f64,
    sd: f64,
}

fn label(e: Estimator) -> String {
    match e {
        Estimator::GsSt { temperature } => format!("gs-st, temperature {temperature}"),
        Estimator::Fd { sigma } => format!("fd, sigma {sigma}"),
        other => other.name().to_string(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(root.join(MODEL))?;
    let compiled = CompiledModel::new(&model.ir)?;
    let objective = Objective::parse(OBJECTIVE, &model.ir)?;
    let params = model.ir.param_values();
    let names: Vec<String> = model.ir.params.iter().map(|p| p.name.clone()).collect();
    let started = Instant::now();

    let exact = master_equation(&model.ir, &HORIZONS)?;
    eprintln!("master equation: {:.1} s", started.elapsed().as_secs_f64());

    let mut estimators: Vec<Estimator> = TEMPERATURES
        .iter()
        .map(|&temperature| Estimator::GsSt { temperature })
        .collect();
    estimators.push(Estimator::Score);
    estimators.push(Estimator::AltPath);
    estimators.push(Estimator::Fd { sigma: 0.05 });

    let mut cells = Vec::new();
    for &estimator in &estimators {
        let t0 = Instant::now();
        for &horizon in &HORIZONS {
            let mut runs = Vec::new();
            let mut failed = 0;
            let mut events = 0u64;
            for &seed in &SEEDS {
                let options = GradOptions {
                    t_end: horizon,
                    trajectories: TRAJECTORIES,
                    seed,
                    estimator,
                    max_events: 10_000_000,
                };
                match estimate_gradient(&compiled, &params, &objective, &options) {
                    Ok(r) => {
                        events += r.events;
                        runs.push(r);
                    }
                    Err(rxnc::estimators::GradError::NonFinite { .. }) => failed += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            let params = (0..names.len())
                .map(|q| {
                    (failed == 0).then(|| {
                        let s = runs.len() as f64;
                        let est: Vec<_> = runs.iter().map(|r| r.gradient[q].1).collect();
                        Pooled {
                            estimate: est.iter().map(|e| e.estimate).sum::<f64>() / s,
                            stderr: est.iter().map(|e| e.stderr.powi(2)).sum::<f64>().sqrt() / s,
                            sd: (est.iter().map(|e| e.stderr.powi(2)).sum::<f64>() / s
                                * TRAJECTORIES as f64)
                                .sqrt(),
                        }
                    })
                })
                .collect();
            cells.push(Cell {
                estimator,
                horizon,
                events: events as f64 / (runs.len().max(1) * TRAJECTORIES) as f64,
                failed,
                params,
            });
        }
        eprintln!(
            "{:<24} {:.1} s",
            label(estimator),
            t0.elapsed().as_secs_f64()
        );
    }

    let figures = root.join("docs/figures");
    std::fs::create_dir_all(&figures)?;
    write_csv(
        &figures.join("gradient_variance.csv"),
        &cells,
        &names,
        &exact,
    )?;
    print_summary(&cells, &names, &exact);
    draw_sd(&figures.join("gradient_variance.svg"), &cells, &names)?;
    draw_bias(&figures.join("gradient_bias.svg"), &cells, &names, &exact)?;
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The exact mean of C and its derivatives with respect to (kon, koff) at each horizon.
struct Exact {
    mean: Vec<f64>,
    gradient: Vec<[f64; 2]>,
}

/// Solves the master equation of A + B <-> C: with A0, B0, C0 the initial counts, the state is the
/// number of complexes c in 0..=C0 + min(A0, B0), binding goes c -> c + 1 at kon (A0 + C0 - c)
/// (B0 + C0 - c) and unbinding c -> c - 1 at koff c. The sensitivity s = dp/dθ obeys
/// ds/dt = Q s + (dQ/dθ) p, so exp(t [[Q, dQ/dθ], [0, Q]]) applied to (0, p0) gives (s, p).
fn master_equation(model: &rxnc::ir::Model, horizons: &[f64]) -> Result<Exact, String> {
    let species = |n: &str| {
        model
            .species_index(n)
            .ok_or(format!("{MODEL} has no species {n}"))
    };
    let param = |n: &str| {
        model
            .param_index(n)
            .ok_or(format!("{MODEL} has no parameter {n}"))
    };
    let x0 = model.initial_state();
    let p = model.param_values();
    let (a0, b0, c0) = (x0[species("A")?], x0[species("B")?], x0[species("C")?]);
    let (kon, koff) = (p[param("kon")?], p[param("koff")?]);
    if param("kon")? != 0 || param("koff")? != 1 || p.len() != 2 {
        return Err(format!("{MODEL} should declare exactly kon, then koff"));
    }
    let n = (c0 + a0.min(b0)) as usize + 1;
    let pairs = |c: usize| ((a0 + c0 - c as i64) * (b0 + c0 - c as i64)) as f64;
    // Generator columns: Q[to][from].
    let generator = |bind: f64, unbind: f64| {
        let mut q = vec![0.0; n * n];
        for c in 0..n {
            let up = if c + 1 < n { bind * pairs(c) } else { 0.0 };
            let down = unbind * c as f64;
            if c + 1 < n {
                q[(c + 1) * n + c] += up;
            }
            if c > 0 {
                q[(c - 1) * n + c] += down;
            }
            q[c * n + c] -= up + down;
        }
        q
    };
    let q = generator(kon, koff);
    let dq = [generator(1.0, 0.0), generator(0.0, 1.0)];
    let m = 2 * n;
    let augmented: Vec<Vec<f64>> = dq
        .iter()
        .map(|d| {
            let mut g = vec![0.0; m * m];
            for i in 0..n {
                for j in 0..n {
                    g[i * m + j] = q[i * n + j];
                    g[i * m + n + j] = d[i * n + j];
                    g[(n + i) * m + n + j] = q[i * n + j];
                }
            }
            g
        })
        .collect();
    let start = c0 as usize;
    let mut exact = Exact {
        mean: vec![],
        gradient: vec![],
    };
    for &t in horizons {
        let mut gradient = [0.0; 2];
        let mut mean = 0.0;
        std::thread::scope(|s| {
            let handles: Vec<_> = augmented
                .iter()
                .map(|g| s.spawn(move || expm(g, m, t)))
                .collect();
            for (k, h) in handles.into_iter().enumerate() {
                let e = h.join().expect("matrix exponential");
                // Column n + start of exp(tG) is its action on (0, e_start).
                gradient[k] = (0..n).map(|c| c as f64 * e[c * m + n + start]).sum();
                mean = (0..n).map(|c| c as f64 * e[(n + c) * m + n + start]).sum();
            }
        });
        exact.mean.push(mean);
        exact.gradient.push(gradient);
    }
    Ok(exact)
}

/// exp(tG) of a dense m × m matrix by scaling and squaring of its Taylor series.
fn expm(g: &[f64], m: usize, t: f64) -> Vec<f64> {
    let norm = (0..m)
        .map(|j| (0..m).map(|i| g[i * m + j].abs()).sum::<f64>())
        .fold(0.0, f64::max)
        * t;
    let squarings = (norm / 0.25).log2().ceil().max(0.0) as i32;
    let h = t / 2f64.powi(squarings);
    let a: Vec<f64> = g.iter().map(|v| v * h).collect();
    let mut sum = vec![0.0; m * m];
    let mut term = vec![0.0; m * m];
    for i in 0..m {
        sum[i * m + i] = 1.0;
        term[i * m + i] = 1.0;
    }
    for k in 1..=20 {
        term = matmul(&term, &a, m);
        term.iter_mut().for_each(|v| *v /= k as f64);
        sum.iter_mut().zip(&term).for_each(|(s, v)| *s += v);
    }
    for _ in 0..squarings {
        sum = matmul(&sum, &sum, m);
    }
    sum
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let v = a[i * m + k];
            if v == 0.0 {
                continue;
            }
            let (row, src) = (&mut c[i * m..(i + 1) * m], &b[k * m..(k + 1) * m]);
            row.iter_mut().zip(src).for_each(|(r, s)| *r += v * s);
        }
    }
    c
}

fn score_cell(cells: &[Cell], horizon: f64) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.estimator == Estimator::Score && c.horizon == horizon)
}

fn horizon_index(horizon: f64) -> usize {
    HORIZONS.iter().position(|&h| h == horizon).unwrap()
}

fn write_csv(path: &Path, cells: &[Cell], names: &[String], exact: &Exact) -> std::io::Result<()> {
    let mut out = String::from(
        "estimator,temperature,sigma,horizon,events_per_trajectory,parameter,estimate,stderr,sd_single,exact,bias,bias_vs_score,bias_vs_score_stderr,failed_seeds\n",
    );
    let number = |v: f64| {
        if v.is_finite() {
            format!("{v:.6e}")
        } else {
            String::new()
        }
    };
    for c in cells {
        let h = horizon_index(c.horizon);
        let (temperature, sigma) = match c.estimator {
            Estimator::GsSt { temperature } => (temperature.to_string(), String::new()),
            Estimator::Fd { sigma } => (String::new(), sigma.to_string()),
            _ => (String::new(), String::new()),
        };
        let score = score_cell(cells, c.horizon).filter(|_| c.estimator != Estimator::Score);
        for (q, name) in names.iter().enumerate() {
            let truth = exact.gradient[h][q];
            let p = c.params[q];
            let against = score.and_then(|s| s.params[q]);
            let value = |f: &dyn Fn(Pooled) -> f64| p.map_or(String::new(), |p| number(f(p)));
            let versus = |f: &dyn Fn(Pooled, Pooled) -> f64| match (p, against) {
                (Some(p), Some(s)) => number(f(p, s)),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{},{temperature},{sigma},{},{:.1},{name},{},{},{},{},{},{},{},{}",
                c.estimator.name(),
                c.horizon,
                c.events,
                value(&|p| p.estimate),
                value(&|p| p.stderr),
                value(&|p| p.sd),
                number(truth),
                value(&|p| p.estimate - truth),
                versus(&|p, s| p.estimate - s.estimate),
                versus(&|p, s| (p.stderr.powi(2) + s.stderr.powi(2)).sqrt()),
                c.failed
            );
        }
    }
    std::fs::write(path, out)
}

fn print_summary(cells: &[Cell], names: &[String], exact: &Exact) {
    for (q, name) in names.iter().enumerate() {
        println!(
            "\nd {OBJECTIVE}/d{name}: single-trajectory sd (estimate - exact, in standard errors)"
        );
        print!("{:>8} {:>8} {:>10}", "horizon", "events", "exact");
        let columns: Vec<&Cell> = cells.iter().filter(|c| c.horizon == HORIZONS[0]).collect();
        for c in &columns {
            let short = match c.estimator {
                Estimator::GsSt { temperature } => format!("gs-st {temperature}"),
                e => e.name().to_string(),
            };
            print!(" {short:>18}");
        }
        println!();
        for (h, &horizon) in HORIZONS.iter().enumerate() {
            let events = score_cell(cells, horizon).map_or(f64::NAN, |c| c.events);
            print!("{horizon:>8} {events:>8.0} {:>10.4}", exact.gradient[h][q]);
            for c in cells.iter().filter(|c| c.horizon == horizon) {
                match c.params[q] {
                    Some(p) => {
                        let z = (p.estimate - exact.gradient[h][q]) / p.stderr;
                        print!(" {:>9.3e} ({z:>+5.1})", p.sd);
                    }
                    None => print!(" {:>18}", "non-finite"),
                }
            }
            println!();
        }
    }
    println!("\nexact mean(C): {:?}", exact.mean);
}

fn temperature_color(t: f64) -> RGBColor {
    match t {
        t if t <= 0.1 => RGBColor(8, 48, 107),
        t if t <= 0.2 => RGBColor(33, 113, 181),
        t if t <= 0.5 => RGBColor(107, 174, 214),
        t if t <= 1.0 => RGBColor(253, 141, 60),
        t if t <= 2.0 => RGBColor(227, 26, 28),
        _ => RGBColor(128, 0, 38),
    }
}

fn style_of(e: Estimator) -> ShapeStyle {
    match e {
        Estimator::GsSt { temperature } => temperature_color(temperature).stroke_width(2),
        Estimator::Score => BLACK.stroke_width(3),
        Estimator::AltPath => RGBColor(120, 120, 120).stroke_width(2),
        Estimator::Fd { .. } => RGBColor(35, 139, 69).stroke_width(2),
    }
}

type Failure = Box<dyn std::error::Error>;

/// The label of a horizon tick on the top axis: the mean number of reactions per trajectory there.
fn events_label(cells: &[Cell], horizon: f64) -> String {
    HORIZONS
        .iter()
        .find(|&&h| (h / horizon - 1.0).abs() < 1e-6)
        .and_then(|&h| score_cell(cells, h))
        .map_or(String::new(), |c| format!("{:.0}", c.events))
}

fn horizon_range() -> std::ops::Range<f64> {
    HORIZONS[0] * 0.8..HORIZONS[HORIZONS.len() - 1] * 1.25
}

fn draw_sd(path: &PathBuf, cells: &[Cell], names: &[String]) -> Result<(), Failure> {
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "Spread of a single trajectory's gradient estimate, d mean(C)/dθ, A + B <-> C (N = {} × {} seeds)",
            TRAJECTORIES,
            SEEDS.len()
        ),
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((1, names.len()));
    for (q, (panel, name)) in panels.iter().zip(names).enumerate() {
        let values: Vec<f64> = cells
            .iter()
            .filter_map(|c| c.params[q].map(|p| p.sd))
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
        let hi = values.iter().copied().fold(0.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("d mean(C) / d{name}"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .top_x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(horizon_range().log_scale(), (lo..hi).log_scale())?
            .set_secondary_coord(horizon_range().log_scale(), (lo..hi).log_scale());
        chart
            .configure_mesh()
            .x_desc("horizon T (model time units)")
            .y_desc("sd of one trajectory's estimate")
            .x_label_formatter(&|v| format!("{v}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()?;
        chart
            .configure_secondary_axes()
            .x_desc("reactions per trajectory")
            .x_label_formatter(&|v| events_label(cells, *v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let mut estimators: Vec<Estimator> = Vec::new();
        for c in cells {
            if !estimators.contains(&c.estimator) {
                estimators.push(c.estimator);
            }
        }
        for e in estimators {
            let points: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.estimator == e)
                .filter_map(|c| c.params[q].map(|p| (c.horizon, p.sd)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            let style = style_of(e);
            let series = if matches!(e, Estimator::AltPath | Estimator::Fd { .. }) {
                chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(points.clone(), style))?
            };
            if q == 0 {
                series
                    .label(label(e))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 3, style.color.filled())),
            )?;
        }
        if q == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

fn draw_bias(
    path: &PathBuf,
    cells: &[Cell],
    names: &[String],
    exact: &Exact,
) -> Result<(), Failure> {
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Gradient estimates against the exact derivative (master equation), A + B <-> C",
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((1, names.len()));
    let shown: Vec<Estimator> = vec![
        Estimator::GsSt { temperature: 0.5 },
        Estimator::GsSt { temperature: 1.0 },
        Estimator::GsSt { temperature: 5.0 },
        Estimator::Score,
    ];
    for (q, (panel, name)) in panels.iter().zip(names).enumerate() {
        let truth: Vec<f64> = exact.gradient.iter().map(|g| g[q]).collect();
        let estimates = cells
            .iter()
            .filter(|c| shown.contains(&c.estimator))
            .filter_map(|c| c.params[q].map(|p| p.estimate));
        let (vmin, vmax) = truth
            .iter()
            .copied()
            .chain(estimates)
            .filter(|v| v.is_finite())
            .fold((0.0_f64, 0.0_f64), |(a, b), v| (a.min(v), b.max(v)));
        let span = (vmax - vmin).max(1e-9);
        // Room above for the legend in the first panel.
        let (lo, hi) = (vmin - 0.08 * span, vmax + 0.3 * span);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("d mean(C) / d{name}"), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .top_x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(horizon_range().log_scale(), lo..hi)?
            .set_secondary_coord(horizon_range().log_scale(), lo..hi);
        chart
            .configure_mesh()
            .x_desc("horizon T (model time units)")
            .y_desc("estimate ± 2 standard errors")
            .x_label_formatter(&|v| format!("{v}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE)
            .draw()?;
        chart
            .configure_secondary_axes()
            .x_desc("reactions per trajectory")
            .x_label_formatter(&|v| events_label(cells, *v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let exact_style = RGBColor(150, 150, 150).stroke_width(6);
        let series = chart.draw_series(LineSeries::new(
            HORIZONS.iter().copied().zip(truth.iter().copied()),
            exact_style,
        ))?;
        if q == 0 {
            series
                .label("exact (master equation)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], exact_style));
        }
        for (k, &e) in shown.iter().enumerate() {
            // Spread the markers a little along x so that error bars do not overlap.
            let nudge = 1.0 + 0.06 * (k as f64 - 1.5);
            let points: Vec<(f64, Pooled)> = cells
                .iter()
                .filter(|c| c.estimator == e)
                .filter_map(|c| c.params[q].map(|p| (c.horizon * nudge, p)))
                .collect();
            let style = style_of(e);
            let series = chart.draw_series(LineSeries::new(
                points.iter().map(|&(x, p)| (x, p.estimate)),
                style.color.stroke_width(1),
            ))?;
            if q == 0 {
                series
                    .label(label(e))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
            let clamp = |v: f64| v.clamp(lo, hi);
            chart.draw_series(points.iter().map(|&(x, p)| {
                PathElement::new(
                    vec![
                        (x, clamp(p.estimate - 2.0 * p.stderr)),
                        (x, clamp(p.estimate + 2.0 * p.stderr)),
                    ],
                    style.color.stroke_width(2),
                )
            }))?;
            chart.draw_series(
                points
                    .iter()
                    .map(|&(x, p)| Circle::new((x, p.estimate), 4, style.color.filled())),
            )?;
        }
        if q == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
