//! Figures (SVG, drawn with plotters): data against a fitted model with the loss curve, and the
//! trajectories of `rxnc simulate --plot`. Snapshots are drawn as histograms, time courses as
//! mean ± sd bands.

use super::FitResult;
use super::data::Data;
use super::loss::mean_var;
use plotters::prelude::*;

const MODEL: RGBColor = RGBColor(31, 119, 180);
const DATA: RGBColor = RGBColor(214, 39, 40);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Failed = Box<dyn std::error::Error + 'static>;

fn err<E: std::fmt::Debug>(e: E) -> Failed {
    format!("{e:?}").into()
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // A flat curve gets a band around it, wide enough to survive rounding at its size (half a
    // count is lost to rounding above 2^53).
    let flat = (0.5f64).max(1e-9 * lo.abs().max(hi.abs()));
    if hi - lo < 1e-12 || hi - lo < 1e-3 * flat {
        return (lo - flat, hi + flat);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// The tick labels of an axis from `lo` to `hi`: plotters' own for ordinary numbers, scientific
/// notation with enough digits to tell the ticks apart for very large or small ones (a count
/// near 4.6e18 was 19 digits wide and clipped; a density of 1e-10 was 0.0).
struct Ticks {
    scientific: bool,
    digits: usize,
    /// The span is wide enough (10 or more) that plotters' ticks are whole numbers: labelled
    /// `20`, not `20.0`.
    whole: bool,
}

impl Ticks {
    fn new(lo: f64, hi: f64) -> Ticks {
        let scale = lo.abs().max(hi.abs());
        let span = (hi - lo).abs();
        // Ticks are about a tenth of the span apart: one digit beyond that.
        let digits = if span > 0.0 {
            ((scale / span).log10().ceil() as usize + 1).clamp(1, 15)
        } else {
            3
        };
        let scientific = scale >= 1e6 || (scale > 0.0 && scale < 1e-3);
        Ticks {
            scientific,
            digits,
            whole: !scientific && span >= 10.0,
        }
    }

    fn text(&self, v: &f64) -> String {
        let digits = self.digits;
        if self.scientific {
            format!("{v:.digits$e}")
        } else if self.whole && v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            <plotters::coord::types::RangedCoordf64 as plotters::coord::ranged1d::ValueFormatter<
                f64,
            >>::format(v)
        }
    }

    /// Pixels for labels of this axis on the left: the default 50, or enough for long ones.
    fn width(&self) -> u32 {
        if self.scientific {
            50.max(7 * (self.digits as u32 + 6))
        } else {
            50
        }
    }

    /// How many labels at most: plotters' 11, fewer when they are long.
    fn count(&self) -> usize {
        if self.scientific && self.digits > 3 {
            4
        } else {
            11
        }
    }
}

/// Curves are drawn through at most about this many runs of consecutive times (a panel is about
/// 400 pixels wide): a curve sampled at 10^5 times made a 31 MB SVG.
const RUNS: usize = 1000;

/// The points a curve over `times` is drawn through: all of them when there are few, else in
/// each of [`RUNS`] runs of consecutive times the lowest and the highest, in time order, so that
/// the line covers the same pixels, spikes included.
fn thinned(times: &[f64], ys: &[f64]) -> Vec<(f64, f64)> {
    let n = times.len().min(ys.len());
    if n <= 2 * RUNS {
        return times.iter().copied().zip(ys.iter().copied()).collect();
    }
    let mut points = Vec::with_capacity(2 * RUNS + 1);
    for run in 0..RUNS {
        let (from, to) = (run * n / RUNS, (run + 1) * n / RUNS);
        let pick = |better: fn(f64, f64) -> bool| {
            (from + 1..to).fold(
                from,
                |best, k| if better(ys[k], ys[best]) { k } else { best },
            )
        };
        let (low, high) = (pick(|a, b| a < b), pick(|a, b| a > b));
        let (first, second) = (low.min(high), low.max(high));
        points.push((times[first], ys[first]));
        if second != first {
            points.push((times[second], ys[second]));
        }
    }
    if points.last().is_some_and(|&(t, _)| t != times[n - 1]) {
        points.push((times[n - 1], ys[n - 1]));
    }
    points
}

/// The maximal runs of consecutive indices below `n` where `finite` holds.
fn finite_runs(n: usize, finite: impl Fn(usize) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = None;
    for k in 0..=n {
        match (start, k < n && finite(k)) {
            (None, true) => start = Some(k),
            (Some(from), false) => {
                runs.push(from..k);
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// The upper (or lower) edge of a band over `times`: thinned like [`thinned`] to the highest (or
/// lowest) value of each run, held over the run, so that the band still covers every value.
fn edge(times: &[f64], ys: &[f64], upper: bool) -> Vec<(f64, f64)> {
    let n = times.len().min(ys.len());
    if n <= 2 * RUNS {
        return times.iter().copied().zip(ys.iter().copied()).collect();
    }
    (0..RUNS)
        .flat_map(|run| {
            let (from, to) = (run * n / RUNS, (run + 1) * n / RUNS);
            let values = ys[from..to].iter().copied();
            let y = if upper {
                values.fold(f64::NEG_INFINITY, f64::max)
            } else {
                values.fold(f64::INFINITY, f64::min)
            };
            [(times[from], y), (times[to - 1], y)]
        })
        .collect()
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draws the legend in the corner (or edge middle) of the panel that covers the fewest of
/// `points` (what is drawn, in data coordinates), so that it hides no data point or curve when
/// some corner is free: plotters' fixed place covered the last data point of rising curves.
fn draw_legend(chart: &mut Chart, names: &[&str], points: &[(f64, f64)]) -> Result<(), Failed> {
    let area = chart.plotting_area();
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let (base_x, base_y) = area.get_base_pixel();
    let pixels: Vec<(i32, i32)> = (points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|p| {
            let (x, y) = area.map_coordinate(p);
            (x - base_x, y - base_y)
        })
        .collect();
    // The legend box as plotters lays it out (12 px labels, a 30 px symbol column, 10 px
    // margins), with the width of a label estimated at 7 px a character, generously.
    let chars = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as i32;
    let legend = (30 + 20 + 7 * chars, 20 + 15 * names.len() as i32);
    let best = least_covered(&pixels, (w, h), legend);
    chart
        .configure_series_labels()
        .position(best)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Where a legend of size `legend` (pixels) in an area of size `area` covers the fewest of
/// `pixels` (relative to the area's corner), in plotters' layout: corners first, upper right
/// first.
fn least_covered(
    pixels: &[(i32, i32)],
    area: (i32, i32),
    legend: (i32, i32),
) -> SeriesLabelPosition {
    use SeriesLabelPosition as P;
    let ((w, h), (lw, lh)) = (area, legend);
    let place = |p: &P| {
        let x = match p {
            P::UpperLeft | P::MiddleLeft | P::LowerLeft => 5,
            P::UpperMiddle | P::LowerMiddle => (w - lw) / 2,
            _ => w - lw - 5,
        };
        let y = match p {
            P::UpperLeft | P::UpperMiddle | P::UpperRight => 5,
            P::MiddleLeft | P::MiddleRight => (h - lh) / 2,
            _ => h - lh - 5,
        };
        (x, y)
    };
    let covered = |p: &P| {
        let (x, y) = place(p);
        (pixels.iter())
            .filter(|&&(px, py)| px >= x - 4 && px <= x + lw + 4 && py >= y - 4 && py <= y + lh + 4)
            .count()
    };
    let candidates = [
        P::UpperRight,
        P::UpperLeft,
        P::LowerRight,
        P::LowerLeft,
        P::MiddleRight,
        P::MiddleLeft,
        P::UpperMiddle,
        P::LowerMiddle,
    ];
    // `min_by_key` keeps the first of equals: the order above is the preference.
    (candidates.iter())
        .min_by_key(|p| covered(p))
        .cloned()
        .unwrap_or(P::UpperRight)
}

/// Points along a polyline, a few between each pair of vertices, so that a legend placed among
/// sparse points does not hide the lines joining them.
fn along(xs: &[f64], ys: &[f64]) -> Vec<(f64, f64)> {
    let vertices: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    let mut out = Vec::with_capacity(vertices.len() * 4);
    for pair in vertices.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        out.extend((0..4).map(|k| {
            let f = k as f64 / 4.0;
            (x0 + f * (x1 - x0), y0 + f * (y1 - y0))
        }));
    }
    out.extend(vertices.last());
    out
}

/// Normalised histograms of two samples on shared bins (integer bins for counts).
fn histogram(area: &Area, title: &str, series: &[(&str, RGBColor, &[f64])]) -> Result<(), Failed> {
    // Infinite and NaN values have no bin: they are left out (the warning about them is the
    // caller's).
    let all = || {
        series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (lo, hi) = range(all());
    // Unit bins need half-integers exactly representable: below 2^52.
    let integer = all().all(|v| v.fract() == 0.0)
        && hi - lo <= 200.0
        && hi.abs().max(lo.abs()) < 2f64.powi(52);
    let (start, width, bins) = if integer {
        let start = lo.ceil() - 0.5;
        (start, 1.0, ((hi - start).ceil() as usize).max(1))
    } else {
        (lo, (hi - lo) / 40.0, 40)
    };
    let density: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, _, v)| {
            let mut h = vec![0.0; bins];
            let finite = v.iter().filter(|x| x.is_finite()).count();
            for &x in v.iter().filter(|x| x.is_finite()) {
                let b = (((x - start) / width) as usize).min(bins - 1);
                h[b] += 1.0 / (finite as f64 * width);
            }
            h
        })
        .collect();
    let top = density.iter().flatten().copied().fold(0.0, f64::max) * 1.1 + 1e-12;
    let (x_ticks, y_ticks) = (
        Ticks::new(start, start + width * bins as f64),
        Ticks::new(0.0, top),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(y_ticks.width())
        .build_cartesian_2d(start..start + width * bins as f64, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_desc("density")
        .x_label_formatter(&|v| x_ticks.text(v))
        .y_label_formatter(&|v| y_ticks.text(v))
        .x_labels(x_ticks.count())
        .y_labels(y_ticks.count())
        .disable_mesh()
        .draw()
        .map_err(err)?;
    for ((name, color, _), h) in series.iter().zip(&density) {
        let color = *color;
        chart
            .draw_series(h.iter().enumerate().map(|(b, &d)| {
                let x0 = start + b as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, d)], color.mix(0.35).filled())
            }))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.5).filled())
            });
    }
    // A bar covers everything below its top.
    let bars: Vec<(f64, f64)> = (density.iter().flatten().enumerate())
        .flat_map(|(k, &d)| {
            let x = start + ((k % bins) as f64 + 0.5) * width;
            (0..=4).map(move |q| (x, d * q as f64 / 4.0))
        })
        .collect();
    let names: Vec<&str> = series.iter().map(|s| s.0).collect();
    draw_legend(&mut chart, &names, &bars)
}

/// One curve with its ± band per series over `times`; `points` marks series drawn as points with
/// error bars (data) instead of lines.
struct Band<'a> {
    name: &'a str,
    color: RGBColor,
    mean: Vec<f64>,
    sd: Vec<f64>,
    points: bool,
}

fn bands(
    area: &Area,
    title: &str,
    times: &[f64],
    series: &[Band],
    extra_lines: &[(RGBColor, Vec<f64>)],
) -> Result<(), Failed> {
    let (x0, x1) = range(times.iter().copied());
    let (y0, y1) = range(
        series
            .iter()
            .flat_map(|s| s.mean.iter().zip(&s.sd).flat_map(|(m, d)| [m - d, m + d]))
            .chain(extra_lines.iter().flat_map(|l| l.1.iter().copied())),
    );
    let (x_ticks, y_ticks) = (Ticks::new(x0, x1), Ticks::new(y0, y1));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(y_ticks.width())
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time")
        .x_label_formatter(&|v| x_ticks.text(v))
        .y_label_formatter(&|v| y_ticks.text(v))
        .x_labels(x_ticks.count())
        .y_labels(y_ticks.count())
        .disable_mesh()
        .draw()
        .map_err(err)?;
    // Curves break where a value is infinite or NaN (an observable such as 1/X at X = 0)
    // rather than jump to the edge of the panel.
    for (color, ys) in extra_lines {
        for run in finite_runs(times.len().min(ys.len()), |k| ys[k].is_finite()) {
            chart
                .draw_series(LineSeries::new(
                    thinned(&times[run.clone()], &ys[run]),
                    color.mix(0.25).stroke_width(1),
                ))
                .map_err(err)?;
        }
    }
    for s in series {
        let color = s.color;
        if s.points {
            // At most about 2 RUNS points (10^5 data times made an 18.7 MB SVG): every k-th.
            let stride = times.len().div_ceil(2 * RUNS).max(1);
            let finite = || {
                (times.iter().zip(&s.mean).zip(&s.sd))
                    .step_by(stride)
                    .filter(|((_, m), d)| m.is_finite() && d.is_finite())
            };
            chart
                .draw_series(finite().map(|((&t, &m), &d)| {
                    PathElement::new(vec![(t, m - d), (t, m + d)], color.stroke_width(1))
                }))
                .map_err(err)?;
            chart
                .draw_series(finite().map(|((&t, &m), _)| Circle::new((t, m), 3, color.filled())))
                .map_err(err)?
                .label(s.name)
                .legend(move |(x, y)| Circle::new((x + 5, y), 3, color.filled()));
        } else {
            let shifted = |sign: f64| -> Vec<f64> {
                s.mean
                    .iter()
                    .zip(&s.sd)
                    .map(|(m, d)| m + sign * d)
                    .collect()
            };
            let (upper, lower) = (shifted(1.0), shifted(-1.0));
            let n = times.len().min(upper.len());
            for run in finite_runs(n, |k| upper[k].is_finite() && lower[k].is_finite()) {
                let mut outline = edge(&times[run.clone()], &upper[run.clone()], true);
                outline.extend(
                    edge(&times[run.clone()], &lower[run], false)
                        .into_iter()
                        .rev(),
                );
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        outline,
                        color.mix(0.2).filled(),
                    )))
                    .map_err(err)?;
            }
            let mut curve = finite_runs(n, |k| s.mean[k].is_finite())
                .into_iter()
                .map(|run| thinned(&times[run.clone()], &s.mean[run]));
            // The first piece carries the legend entry (an empty one if nothing is finite).
            chart
                .draw_series(LineSeries::new(
                    curve.next().unwrap_or_default(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], color.stroke_width(2))
                });
            for piece in curve {
                chart
                    .draw_series(LineSeries::new(piece, color.stroke_width(2)))
                    .map_err(err)?;
            }
        }
    }
    let mut drawn: Vec<(f64, f64)> = Vec::new();
    for s in series {
        for sign in [-1.0, 0.0, 1.0] {
            let ys: Vec<f64> = s
                .mean
                .iter()
                .zip(&s.sd)
                .map(|(m, d)| m + sign * d)
                .collect();
            drawn.extend(along(times, &ys));
        }
    }
    for (_, ys) in extra_lines {
        drawn.extend(along(times, ys));
    }
    let names: Vec<&str> = series.iter().map(|s| s.name).collect();
    draw_legend(&mut chart, &names, &drawn)
}

fn loss_curve(area: &Area, result: &FitResult) -> Result<(), Failed> {
    let n = result.trace.len();
    let (y0, y1) = range(result.trace.iter().map(|s| s.loss));
    let y_ticks = Ticks::new(y0.max(0.0), y1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("loss ({})", result.loss_kind.name()),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(y_ticks.width())
        .build_cartesian_2d(0.0..n.max(1) as f64, y0.max(0.0)..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step (all restarts)")
        .y_label_formatter(&|v| y_ticks.text(v))
        .y_labels(y_ticks.count())
        .disable_mesh()
        .draw()
        .map_err(err)?;
    for r in 0..result.restarts.len() {
        let color = PALETTE[r % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                result
                    .trace
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.restart == r)
                    .map(|(i, s)| (i as f64, s.loss)),
                color.stroke_width(1),
            ))
            .map_err(err)?;
    }
    Ok(())
}

fn grid(panels: usize) -> (usize, usize) {
    let cols = panels.clamp(1, 3);
    (panels.div_ceil(cols), cols)
}

/// Data against the fitted model and the loss curve, as an SVG document. `pool[k][m]` holds
/// values simulated at the fitted parameters.
pub fn fit_svg(data: &Data, result: &FitResult, pool: &[Vec<Vec<f64>>]) -> Result<String, Failed> {
    let mut svg = String::new();
    {
        let panels = data.columns.len() + 1;
        let (rows, cols) = grid(panels);
        let root = SVGBackend::with_string(&mut svg, (420 * cols as u32, 320 * rows as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((rows, cols));
        for (m, name) in data.columns.iter().enumerate() {
            match &data.times {
                None => {
                    let last = pool.len() - 1;
                    histogram(
                        &areas[m],
                        name,
                        &[
                            ("data", DATA, &data.samples[0][m]),
                            ("model", MODEL, &pool[last][m]),
                        ],
                    )?;
                }
                Some(times) => {
                    let stats = |values: &dyn Fn(usize) -> Vec<f64>| -> (Vec<f64>, Vec<f64>) {
                        (0..times.len())
                            .map(|k| {
                                let (mean, var) = mean_var(&values(k));
                                (mean, var.sqrt())
                            })
                            .unzip()
                    };
                    let (dm, ds) = stats(&|k| data.samples[k][m].clone());
                    let (mm, ms) = stats(&|k| pool[k][m].clone());
                    bands(
                        &areas[m],
                        &format!("{name}: mean ± sd"),
                        times,
                        &[
                            Band {
                                name: "model",
                                color: MODEL,
                                mean: mm,
                                sd: ms,
                                points: false,
                            },
                            Band {
                                name: "data",
                                color: DATA,
                                mean: dm,
                                sd: ds,
                                points: true,
                            },
                        ],
                        &[],
                    )?;
                }
            }
        }
        loss_curve(&areas[data.columns.len()], result)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// What `rxnc simulate --plot` draws, per named series (species, then observables): the mean ±
/// sd band over all trajectories, a few sample paths, and the distribution at the last time.
#[derive(Debug, Clone, Default)]
pub struct TrajectoryFigure {
    /// Series names.
    pub names: Vec<String>,
    /// Sampling times.
    pub times: Vec<f64>,
    /// Mean and standard deviation over the trajectories, `[series][time]`.
    pub mean: Vec<Vec<f64>>,
    /// See `mean`.
    pub sd: Vec<Vec<f64>>,
    /// Sample paths drawn thin, `[series][path][time]` (up to 10 are drawn).
    pub samples: Vec<Vec<Vec<f64>>>,
    /// Every trajectory's value at the last time, `[series][trajectory]`.
    pub finals: Vec<Vec<f64>>,
    /// Number of trajectories summarised.
    pub trajectories: usize,
    /// The histogram shows the first this many series (species; observables may live on other
    /// scales).
    pub in_histogram: usize,
}

/// Draws a [`TrajectoryFigure`]: one panel per series, then the distribution at the last time.
pub fn trajectories_svg(figure: &TrajectoryFigure) -> Result<String, Failed> {
    let TrajectoryFigure {
        names,
        times,
        mean,
        sd,
        samples,
        finals,
        trajectories,
        in_histogram,
    } = figure;
    let mut svg = String::new();
    {
        let panels = names.len() + 1;
        let (rows, cols) = grid(panels);
        let root = SVGBackend::with_string(&mut svg, (420 * cols as u32, 320 * rows as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let areas = root.split_evenly((rows, cols));
        for (m, name) in names.iter().enumerate() {
            let color = PALETTE[m % PALETTE.len()];
            let paths: Vec<(RGBColor, Vec<f64>)> = samples[m]
                .iter()
                .take(10)
                .map(|path| (color, path.clone()))
                .collect();
            bands(
                &areas[m],
                &format!("{name}: {trajectories} trajectories, mean ± sd"),
                times,
                &[Band {
                    name: "mean ± sd",
                    color,
                    mean: mean[m].clone(),
                    sd: sd[m].clone(),
                    points: false,
                }],
                &paths,
            )?;
        }
        let last = times.len().saturating_sub(1);
        let series: Vec<(&str, RGBColor, &[f64])> = names
            .iter()
            .zip(finals)
            .take((*in_histogram).max(1))
            .enumerate()
            .map(|(m, (n, v))| (n.as_str(), PALETTE[m % PALETTE.len()], v.as_slice()))
            .collect();
        histogram(
            &areas[names.len()],
            &format!(
                "distribution at t = {}",
                times.get(last).copied().unwrap_or(0.0)
            ),
            &series,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// DejaVu Sans (Bitstream Vera licence, see src/driver/fonts/LICENSE), embedded so that PNG figures
/// have text on machines without system fonts.
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

/// Rasterises one of the SVG figures above to PNG bytes, at twice the SVG's pixel size so that text
/// stays sharp.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, Failed> {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_font_data(FONT.to_vec());
    options.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    options.font_family = "DejaVu Sans".to_string();
    let tree = resvg::usvg::Tree::from_str(svg, &options).map_err(err)?;
    let scale = 2.0;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).ceil() as u32,
        (size.height() * scale).ceil() as u32,
    );
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(w, h).ok_or_else(|| err("figure too large to rasterise"))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(err)
}

/// The bytes to write for a figure: SVG as is, or PNG when the path ends in `.png`.
pub fn figure_bytes(path: &std::path::Path, svg: String) -> Result<Vec<u8>, Failed> {
    let png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if png {
        svg_to_png(&svg)
    } else {
        Ok(svg.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The legend goes where it hides the fewest drawn points: upper right when free, else the
    /// first free corner, else the least crowded place.
    #[test]
    fn the_legend_avoids_the_data() {
        use SeriesLabelPosition as P;
        let (area, legend) = ((400, 300), (100, 50));
        let place = |pixels: &[(i32, i32)]| least_covered(pixels, area, legend);
        // A rising curve (pixel y grows downwards) fills the upper right and lower left.
        let rising: Vec<(i32, i32)> = (0..400).map(|x| (x, 300 - 3 * x / 4)).collect();
        assert_eq!(place(&[]), P::UpperRight);
        assert_eq!(place(&rising), P::UpperLeft);
        // A falling one: the upper left and lower right.
        let falling: Vec<(i32, i32)> = (0..400).map(|x| (x, 3 * x / 4)).collect();
        assert_eq!(place(&falling), P::UpperRight);
        // Rising and levelling off near the top (the last data point of a growth curve).
        let saturating: Vec<(i32, i32)> = (0..400).map(|x| (x, 20 + 260 * 50 / (x + 50))).collect();
        assert_eq!(place(&saturating), P::UpperLeft);
        // Points everywhere but near the left edge's middle.
        let crowd: Vec<(i32, i32)> = (0..400)
            .flat_map(|x| (0..300).map(move |y| (x, y)))
            .filter(|&(x, y)| !(x < 120 && (110..190).contains(&y)))
            .step_by(7)
            .collect();
        assert_eq!(place(&crowd), P::MiddleLeft);
    }

    /// Short curves are drawn through every point; long ones through at most two per run, which
    /// keep the ends, every run's extremes (a one-sample spike), and time order.
    #[test]
    fn long_curves_are_thinned_to_their_extremes() {
        let times: Vec<f64> = (0..5).map(f64::from).collect();
        let ys = [3.0, 1.0, 4.0, 1.0, 5.0];
        assert_eq!(
            thinned(&times, &ys),
            times.iter().copied().zip(ys).collect::<Vec<_>>()
        );
        let n = 100_000;
        let times: Vec<f64> = (0..n).map(|k| k as f64 * 0.01).collect();
        let mut ys: Vec<f64> = times.iter().map(|t| (t / 7.0).sin()).collect();
        ys[54_321] = 9.0;
        ys[77_777] = -9.0;
        let points = thinned(&times, &ys);
        assert!(points.len() <= 2 * RUNS + 1, "{} points", points.len());
        assert_eq!(points[0], (times[0], ys[0]));
        assert_eq!(points[points.len() - 1], (times[n - 1], ys[n - 1]));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "time order");
        assert!(points.contains(&(times[54_321], 9.0)) && points.contains(&(times[77_777], -9.0)));
        // A band's edges hold each run's highest (lowest) value over the run.
        let upper = edge(&times, &ys, true);
        let lower = edge(&times, &ys, false);
        assert_eq!((upper.len(), lower.len()), (2 * RUNS, 2 * RUNS));
        let run = |k: usize| k * RUNS / n;
        for (k, &y) in ys.iter().enumerate() {
            let (hi, lo) = (upper[2 * run(k)].1, lower[2 * run(k)].1);
            assert!(
                lo <= y && y <= hi,
                "time index {k}: {y} outside [{lo}, {hi}]"
            );
        }
    }

    /// Curves break at infinite and NaN values: one piece per run of finite ones.
    #[test]
    fn curves_break_where_values_are_not_finite() {
        let ys = [1.0, f64::INFINITY, 2.0, 3.0, f64::NAN, f64::NAN, 4.0];
        let runs = finite_runs(ys.len(), |k| ys[k].is_finite());
        assert_eq!(runs, [0..1, 2..4, 6..7]);
        assert_eq!(finite_runs(2, |_| false), []);
        assert_eq!(
            finite_runs(3, |_| true),
            vec![std::ops::Range { start: 0, end: 3 }]
        );
    }

    /// Axes: a flat curve gets a band that survives rounding at its size (half a count vanishes
    /// near 2^62), and very large or small ticks are labelled in scientific notation with enough
    /// digits to tell them apart.
    #[test]
    fn axes_of_extreme_values() {
        let (lo, hi) = range([4.6e18, 4.6e18].into_iter());
        assert!(lo < 4.6e18 && 4.6e18 < hi, "({lo}, {hi})");
        assert_eq!(range([3.0, 3.0, f64::NAN].into_iter()), (2.5, 3.5));
        let ticks = Ticks::new(lo, hi);
        assert!(ticks.scientific);
        let (a, b) = (ticks.text(&(4.6e18 - 2e9)), ticks.text(&(4.6e18 + 2e9)));
        assert_ne!(a, b);
        assert!(a.contains("e18"), "{a}");
        assert_eq!(Ticks::new(0.0, 4.3e-9).text(&2e-9), "2.0e-9");
        // Ordinary numbers are labelled as plotters does, whole ones on wide axes without `.0`.
        assert_eq!(Ticks::new(0.0, 20.0).text(&15.0), "15");
        assert_eq!(Ticks::new(0.0, 2.0).text(&1.5), "1.5");
        assert_eq!(Ticks::new(0.0, 2.0).text(&1.0), "1.0");
    }
}
