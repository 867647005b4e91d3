//! `rxnc run FILE --fit DATA.csv`: fit the free parameters to data.

use super::output::{PendingFile, print_stdout};
use super::simulate::{cell, num, plural, sim_failure};
use super::{Failure, style};
use crate::Model;
use crate::driver::loss::LossKind;
use crate::driver::{self, FitError, FitOptions, FitResult, Step, data};
use crate::estimators::Estimator;
use crate::jit::CompiledModel;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model file.
    file: PathBuf,
    /// The data to fit: CSV with a header naming species or observables and an optional `time`
    /// column; one row per observed cell (see docs/fitting.md).
    #[arg(long, value_name = "DATA.csv")]
    fit: PathBuf,
    /// The loss: w1 (1-Wasserstein), moments (mean and variance), mean, auto (w1 at times with 10
    /// or more rows, mean at the others) [default: auto].
    #[arg(long, value_name = "L")]
    loss: Option<String>,
    /// Optimiser steps per restart (fewer when the loss reaches a plateau).
    #[arg(long, value_name = "K", default_value_t = 200)]
    steps: usize,
    /// Simulated trajectories per step (they give the loss value).
    #[arg(
        short = 'n',
        long = "trajectories",
        value_name = "N",
        default_value_t = 1000
    )]
    trajectories: usize,
    /// How many of the N trajectories carry gradients [default: all]; fewer is faster, with a
    /// small bias (docs/fitting.md).
    #[arg(long, value_name = "M")]
    tracked: Option<usize>,
    /// The gradient estimator: score (likelihood ratio, unbiased), gs-st
    /// (straight-through Gumbel-Softmax, biased at temperature 1), alt-path, fd.
    #[arg(long, value_name = "E", default_value = "score")]
    estimator: String,
    /// Softmax temperature of gs-st [default: 1].
    #[arg(long, value_name = "TAU", allow_hyphen_values = true)]
    temperature: Option<f64>,
    /// Smoothing width of fd (relative; in log space for positive rates) [default: 0.05].
    #[arg(long, value_name = "SIGMA", allow_hyphen_values = true)]
    sigma: Option<f64>,
    /// Adam's learning rate in transformed coordinates (log or logit).
    #[arg(
        long,
        value_name = "LR",
        default_value_t = 0.05,
        allow_hyphen_values = true
    )]
    lr: f64,
    /// Independent starts: the file's values, then random points inside bounds.
    #[arg(long, value_name = "K", default_value_t = 1)]
    restarts: usize,
    /// Parametric bootstrap: refit B data sets simulated at the fitted values and report the sd
    /// of the refitted values as ± (B refits: B times the cost of the fit; 0 is off).
    #[arg(long, value_name = "B", default_value_t = 0)]
    bootstrap: usize,
    /// Seed of everything random.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// For data without a time column: the burn-in horizon [default: 10 / slowest first-order
    /// rate, at most 1000].
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    t_end: Option<f64>,
    /// Write the result as JSON.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write every step as CSV: restart,step,loss,<params...>.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Draw data against the fitted model and the loss curve (.svg, or .png for a raster image).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Stop a trajectory that exceeds this many events.
    #[arg(long, value_name = "K", default_value_t = 100_000_000)]
    max_events: u64,
    /// Worker threads [default: one per idle core]; results do not depend on it.
    #[arg(long, value_name = "K")]
    threads: Option<usize>,
}

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let estimator = super::estimator(&args.estimator, args.temperature, args.sigma)?;
    // The library checks these too, but only once the model and data are read.
    match estimator {
        Estimator::GsSt { temperature } if !(temperature.is_finite() && temperature > 0.0) => {
            return Err(Failure::input(
                format!("--temperature must be positive, not {}", num(temperature)),
                "for example --temperature 1",
            ));
        }
        Estimator::Fd { sigma } if !(sigma > 0.0 && sigma <= crate::estimators::FD_MAX_SIGMA) => {
            return Err(Failure::input(
                format!(
                    "--sigma must be positive and at most {}, not {}",
                    crate::estimators::FD_MAX_SIGMA,
                    num(sigma)
                ),
                "it is relative to each parameter (in log space for positive rates): for example --sigma 0.05",
            ));
        }
        _ => {}
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Failure::input(
            format!("--lr must be positive, not {}", num(args.lr)),
            "for example --lr 0.05",
        ));
    }
    if let Some(t) = args.t_end
        && !(t.is_finite() && t > 0.0)
    {
        return Err(Failure::input(
            format!("--t-end must be a positive time, not {}", num(t)),
            "for example --t-end 50, or leave it out to choose it from the model's rates",
        ));
    }
    if args.trajectories < 2 {
        return Err(Failure::input(
            format!("-n must be at least 2, not {}", args.trajectories),
            "for example -n 1000",
        ));
    }
    let tracked = args.tracked.unwrap_or(args.trajectories);
    if tracked < 2 || tracked > args.trajectories {
        return Err(Failure::input(
            format!(
                "--tracked must be between 2 and -n ({}), not {tracked}",
                args.trajectories
            ),
            "leave it out to track every trajectory",
        ));
    }
    if args.steps == 0 || args.restarts == 0 {
        return Err(Failure::input(
            "--steps and --restarts must be at least 1",
            "for example --steps 200 --restarts 3",
        ));
    }
    if args.max_events == 0 {
        return Err(Failure::input(
            "--max-events must be at least 1",
            "leave it out for the default",
        ));
    }
    let model = Model::load(&args.file)?;
    if model.ir.params.is_empty() {
        return Err(Failure::input(
            format!("`{}` has no free parameters to fit", args.file.display()),
            "declare the rates to fit with `param` (constants declared with `const` stay fixed)",
        ));
    }
    let shown = args.fit.display().to_string();
    let text = std::fs::read_to_string(&args.fit).map_err(|e| match super::not_utf8(&shown) {
        Some((line, col, byte)) => Failure::input(
            format!(
                "`{shown}` is not UTF-8 text: line {line}, column {col} has the byte 0x{byte:02X}"
            ),
            "data files are UTF-8 CSV; save it again with UTF-8 encoding",
        ),
        None => Failure::input(
            format!("cannot read data file `{shown}`: {e}"),
            "check the path; data files are UTF-8 CSV text",
        ),
    })?;
    let data =
        data::parse(&shown, &text, &model.ir).map_err(|e| Failure::Input(e.render(style())))?;
    if args.t_end.is_some() && data.times.is_some() {
        return Err(Failure::input(
            format!(
                "--t-end is the burn-in horizon for stationary data, but `{shown}` has a time column"
            ),
            "leave --t-end out: a time course is simulated up to its last observation time",
        ));
    }
    if args.bootstrap == 1 {
        return Err(Failure::input(
            "--bootstrap needs at least 2 refits to estimate a spread",
            "for example --bootstrap 20",
        ));
    }
    let loss = match args.loss.as_deref() {
        // `auto` said explicitly is the default, resolved the same way (and labelled so).
        None | Some("auto") => LossKind::default_for(&data),
        Some(name) => LossKind::parse(name).ok_or_else(|| {
            Failure::input(
                format!("unknown loss `{name}`"),
                format!("choose one of {}", LossKind::NAMES.join(", ")),
            )
        })?,
    };
    super::output::distinct_outputs(
        &[
            ("--out", args.out.as_deref()),
            ("--trace", args.trace.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
        &[("model file", &args.file), ("data file", &args.fit)],
    )?;
    super::set_threads(args.threads)?;
    // Open outputs first: an unwritable path fails before the fit, not after it.
    let out_file = args
        .out
        .as_deref()
        .map(|p| PendingFile::create(p, "--out"))
        .transpose()?;
    let trace_file = args
        .trace
        .as_deref()
        .map(|p| PendingFile::create(p, "--trace"))
        .transpose()?;
    if let Some(p) = &args.plot {
        super::simulate::check_plot_path(p)?;
    }
    let plot_file = args
        .plot
        .as_deref()
        .map(|p| PendingFile::create(p, "--plot"))
        .transpose()?;
    let compiled =
        CompiledModel::new(&model.ir).map_err(|e| super::simulate::compile_failure(&model, e))?;
    let options = FitOptions {
        steps: args.steps,
        trajectories: args.trajectories,
        tracked,
        estimator,
        loss,
        lr: args.lr,
        seed: args.seed,
        t_end: args.t_end,
        restarts: args.restarts,
        max_events: args.max_events,
    };
    let names: Vec<String> = model.ir.params.iter().map(|p| p.name.clone()).collect();
    let bar = super::progress_bar(
        (args.steps * args.restarts) as u64,
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
    );
    let mut last_restart = 0;
    let mut progress = |s: &Step| {
        if s.restart != last_restart {
            // A restart that stopped early on a plateau skips its remaining steps.
            bar.set_position((s.restart * args.steps) as u64);
            last_restart = s.restart;
        }
        bar.inc(1);
        let mut msg = format!("loss {:.4}", s.loss);
        for (n, v) in names.iter().zip(&s.params) {
            let _ = write!(msg, " {n}={v:.4}");
        }
        if args.restarts > 1 {
            let _ = write!(msg, " (restart {})", s.restart + 1);
        }
        bar.set_message(msg);
    };
    let result = driver::fit(&compiled, &data, &options, &mut progress);
    bar.finish_and_clear();
    let result = match result {
        Ok(mut r) if args.bootstrap >= 2 => {
            let bar = super::progress_bar(
                args.bootstrap as u64,
                "{elapsed_precise} bootstrap [{bar:30}] {pos}/{len} {msg}",
            );
            let refits = driver::bootstrap(
                &compiled,
                &data,
                &options,
                &r.params,
                args.bootstrap,
                &mut |b, s| {
                    bar.set_position(b as u64);
                    bar.set_message(format!("step {} loss {:.4}", s.step + 1, s.loss));
                },
            );
            bar.finish_and_clear();
            match refits {
                Ok(refits) => {
                    r.uncertainty = (0..r.params.len())
                        .map(|q| {
                            let v: Vec<f64> = refits.iter().map(|p| p[q]).collect();
                            let sd = driver::loss::mean_var(&v).1.sqrt();
                            if r.fitted[q] { sd } else { f64::NAN }
                        })
                        .collect();
                    r.uncertainty_method =
                        "sd of the refits in a parametric bootstrap (--bootstrap)";
                    r.bootstrap = refits;
                    Ok(r)
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    let result = match result {
        Ok(r) => r,
        // The event limit's own advice is about `simulate --t-end`; here the horizon comes from
        // the data (its last time) or is the burn-in.
        Err(FitError::Simulation(e @ crate::engine::SimError::TooManyEvents { .. })) => {
            let text = e.to_string();
            let message = text.split_once("; ").map_or(text.as_str(), |(m, _)| m);
            let help = match &data.times {
                Some(times) => format!(
                    "the fit simulates to the data's last time, {}: check the time column, or raise \
                     --max-events if so many events are expected",
                    num(times.last().copied().unwrap_or(0.0))
                ),
                None => "shorten the burn-in (--t-end), or raise --max-events if so many events \
                         are expected"
                    .to_string(),
            };
            return Err(Failure::input(message, help));
        }
        Err(FitError::Simulation(e)) => return Err(sim_failure(&model, e)),
        Err(FitError::Options(m)) => return Err(Failure::input(m, "see rxnc run --help")),
        Err(FitError::Diverged { what, trace, best }) => {
            // Keep what was found: the best parameters so far go to --out and --trace.
            let mut saved = Vec::new();
            if let Some(f) = out_file {
                let json = serde_json::json!({
                    "parameters": named(&names, &best),
                    "loss": serde_json::Value::Null,
                    "steps": trace.len(),
                    "diverged": what,
                    "trace": trace_json(&names, &trace),
                });
                f.write_and_commit(format!("{json:#}\n").as_bytes())?;
                saved.push("--out".to_string());
            }
            if let Some(f) = trace_file {
                f.write_and_commit(trace_csv(&names, &trace).as_bytes())?;
                saved.push("--trace".to_string());
            }
            let kept = if saved.is_empty() {
                String::new()
            } else {
                format!(
                    " (the best parameters so far were written to {})",
                    saved.join(" and ")
                )
            };
            return Err(Failure::input(
                format!("{what}{kept}"),
                "lower the learning rate (--lr), use more trajectories (-n), try another --estimator, or bound the parameters in the model (`in [lo, hi]`); if the data really need rates this different, start closer to them (the values in the model file)",
            ));
        }
    };
    // The model at the fitted values, for the comparison with the data and the figure.
    let pool = driver::forward_samples(
        &compiled,
        &result.params,
        &data.leaves,
        &result.times,
        args.seed ^ 0x9107,
        args.max_events,
        0..args.trajectories,
    )
    .map_err(|e| sim_failure(&model, e))?;
    let comparison = compare(&data, &result.times, &pool);
    if let Some(f) = trace_file {
        f.write_and_commit(trace_csv(&names, &result.trace).as_bytes())?;
    }
    if let Some(f) = out_file {
        let mut json = fit_json(&result, &options, &data);
        json["statistics"] = comparison
            .iter()
            .map(|c| {
                serde_json::json!({
                    "time": c.time, "column": c.column,
                    "data_mean": c.data.0, "data_sd": c.data.1,
                    "model_mean": c.model.0, "model_sd": c.model.1,
                })
            })
            .collect();
        f.write_and_commit(format!("{json:#}\n").as_bytes())?;
    }
    if let Some(f) = plot_file {
        let path = args
            .plot
            .as_deref()
            .unwrap_or(std::path::Path::new("plot.svg"));
        let bytes = driver::plot::fit_svg(&data, &result, &pool)
            .and_then(|svg| crate::driver::plot::figure_bytes(path, svg))
            .map_err(|e| Failure::Internal(format!("cannot draw --plot: {e}")))?;
        f.write_and_commit(&bytes)?;
    }
    for failure in &result.failed_restarts {
        eprintln!("warning: {failure}; the other restarts are kept");
    }
    for (name, _) in (result.names.iter().zip(&result.fitted)).filter(|(_, fitted)| !**fitted) {
        eprintln!(
            "warning: `{name}` can affect none of the data's columns ({}): it is not fitted and \
             stays at its value",
            data.columns.join(", ")
        );
    }
    for q in 0..result.names.len() {
        if let Some(note) = model.ir.initial_count_note(q) {
            eprintln!("warning: {note}");
        }
    }
    let mut text = table(&result, &options, &data);
    text.push_str(&comparison_table(
        &comparison,
        data.times.is_none(),
        args.out.is_some(),
    ));
    print_stdout(&text)
}

/// Mean and sd of one column at one time, in the data and in the model at the fitted values.
struct Comparison {
    time: Option<f64>,
    column: String,
    data: (f64, f64),
    model: (f64, f64),
}

fn compare(data: &data::Data, times: &[f64], pool: &[Vec<Vec<f64>>]) -> Vec<Comparison> {
    // The sd of a single row is undefined (mean_var gives it 0).
    let stats = |v: &[f64]| {
        let (m, var) = driver::loss::mean_var(v);
        (m, if v.len() > 1 { var.sqrt() } else { f64::NAN })
    };
    let mut out = Vec::new();
    for (k, group) in data.samples.iter().enumerate() {
        for (m, obs) in group.iter().enumerate() {
            out.push(Comparison {
                time: data.times.as_ref().map(|_| times[k]),
                column: data.columns[m].clone(),
                data: stats(obs),
                model: stats(&pool[k][m]),
            });
        }
    }
    out
}

/// At most this many rows of data-against-model statistics are printed (all go to fit.json).
const COMPARISON_ROWS: usize = 24;

fn comparison_table(rows: &[Comparison], stationary: bool, written_to_out: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<8}  {:<12}  {:>12}  {:>12}  {:>12}  {:>12}",
        if stationary { "" } else { "time" },
        "column",
        "data mean",
        "model mean",
        "data sd",
        "model sd"
    );
    for c in rows.iter().take(COMPARISON_ROWS) {
        let time = c.time.map_or(String::new(), num);
        let _ = writeln!(
            out,
            "{time:<8}  {:<12}  {:>12}  {:>12}  {:>12}  {:>12}",
            c.column,
            cell(c.data.0, 4),
            cell(c.model.0, 4),
            cell(c.data.1, 4),
            cell(c.model.1, 4)
        );
    }
    if rows.len() > COMPARISON_ROWS {
        let more = rows.len() - COMPARISON_ROWS;
        let _ = if written_to_out {
            writeln!(out, "... {more} more rows in --out (\"statistics\")")
        } else {
            writeln!(
                out,
                "... {more} more rows: --out FILE.json writes them all (\"statistics\")"
            )
        };
    }
    out
}

fn named(names: &[String], values: &[f64]) -> serde_json::Map<String, serde_json::Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| (n.clone(), serde_json::json!(v)))
        .collect()
}

fn trace_json(names: &[String], trace: &[Step]) -> serde_json::Value {
    trace
        .iter()
        .map(|s| {
            serde_json::json!({
                "restart": s.restart,
                "step": s.step,
                "loss": s.loss,
                "parameters": named(names, &s.params),
            })
        })
        .collect()
}

fn trace_csv(names: &[String], trace: &[Step]) -> String {
    let mut out = format!("restart,step,loss,{}\n", names.join(","));
    for s in trace {
        let _ = write!(out, "{},{},{}", s.restart, s.step, s.loss);
        for v in &s.params {
            let _ = write!(out, ",{v}");
        }
        out.push('\n');
    }
    out
}

fn fit_json(r: &FitResult, o: &FitOptions, data: &data::Data) -> serde_json::Value {
    let chosen = &r.restarts[r.best];
    serde_json::json!({
        "parameters": named(&r.names, &r.params),
        "loss": r.loss,
        "steps": chosen.steps,
        "stopped": chosen.stopped,
        "uncertainty": named(&r.names, &r.uncertainty),
        "uncertainty_method": r.uncertainty_method,
        "initial": named(&r.names, &r.initial),
        "loss_kind": r.loss_kind.name(),
        "estimator": o.estimator.name(),
        "trajectories": o.trajectories,
        "tracked": o.tracked,
        "data": {"file": data.name, "rows": data.rows, "columns": data.columns, "stationary": data.times.is_none()},
        "times": r.times,
        "restarts": r.restarts.iter().map(|x| serde_json::json!({
            "parameters": named(&r.names, &x.params),
            "loss": x.loss,
            "steps": x.steps,
            "stopped": x.stopped,
        })).collect::<Vec<_>>(),
        "failed_restarts": r.failed_restarts,
        "bootstrap": r.bootstrap.iter().map(|p| named(&r.names, p)).collect::<Vec<_>>(),
        "events": r.events,
        "trace": trace_json(&r.names, &r.trace),
    })
}

fn table(r: &FitResult, o: &FitOptions, data: &data::Data) -> String {
    let mut out = String::new();
    let chosen = &r.restarts[r.best];
    let when = match &data.times {
        Some(t) => plural(t.len(), "time"),
        None => format!("stationary, burn-in t = {:.3}", r.times[0]),
    };
    let _ = writeln!(
        out,
        "data       {} ({} rows, columns {}; {when})",
        data.name,
        data.rows,
        data.columns.join(", ")
    );
    let _ = writeln!(
        out,
        "fit        loss {} = {}, {} ({}), estimator {}, {} trajectories ({} tracked){}",
        r.loss_kind.name(),
        cell(r.loss, 6),
        plural(chosen.steps, "step"),
        chosen.stopped,
        o.estimator.name(),
        o.trajectories,
        o.tracked,
        if r.restarts.len() > 1 {
            format!(", best of {} restarts", r.restarts.len())
        } else {
            String::new()
        }
    );
    let hint = if r.bootstrap.is_empty() && r.uncertainty_method.contains("iterates") {
        "; --bootstrap 20 estimates a real uncertainty"
    } else {
        ""
    };
    let _ = writeln!(out, "± is the {}{hint}\n", r.uncertainty_method);
    let width = r.names.iter().map(|n| n.len()).max().unwrap_or(9).max(9);
    let _ = writeln!(
        out,
        "{:<width$}  {:>12}  {:>12}  {:>12}",
        "parameter", "initial", "fitted", "±"
    );
    // The start of the restart whose result is reported.
    for q in 0..r.names.len() {
        let spread = if r.fitted[q] {
            format!("{:.3e}", r.uncertainty[q])
        } else {
            "not fitted".to_string()
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>12}",
            r.names[q],
            cell(chosen.start[q], 6),
            cell(r.params[q], 6),
            spread
        );
    }
    out
}
