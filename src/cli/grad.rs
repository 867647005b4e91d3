//! `rxnc grad`: the objective and its gradient with respect to every free parameter.

use super::simulate::{cell, num, sim_failure};
use super::{Failure, output::print_stdout, style};
use crate::Model;
use crate::estimators::{Estimator, GradError, GradOptions, Objective, estimate_gradient};
use crate::jit::CompiledModel;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct GradArgs {
    /// The model file.
    file: PathBuf,
    /// The objective: mean(x), var(x), sd(x) of species or observable expressions at the horizon,
    /// combined with numbers and arithmetic, e.g. "(mean(M) - 3)^2 + var(M)".
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    objective: String,
    /// The horizon at which the statistics are taken.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    t_end: f64,
    /// Number of trajectories (at least 2, for standard errors).
    #[arg(short = 'n', long = "trajectories", value_name = "N")]
    trajectories: usize,
    /// The estimator: gs-st (straight-through Gumbel-Softmax), score (likelihood ratio),
    /// alt-path (alternative paths), fd (smoothed finite differences).
    #[arg(long, value_name = "E", default_value = "gs-st")]
    estimator: String,
    /// Softmax temperature of gs-st [default: 1].
    #[arg(long, value_name = "TAU", allow_hyphen_values = true)]
    temperature: Option<f64>,
    /// Smoothing width of fd (relative; in log space for positive rates) [default: 0.05].
    #[arg(long, value_name = "SIGMA", allow_hyphen_values = true)]
    sigma: Option<f64>,
    /// Seed of the random streams.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Stop a trajectory that exceeds this many events.
    #[arg(long, value_name = "K", default_value_t = 100_000_000)]
    max_events: u64,
    /// Worker threads [default: one per idle core]; results do not depend on it.
    #[arg(long, value_name = "K")]
    threads: Option<usize>,
}

pub fn run(args: GradArgs) -> Result<(), Failure> {
    let estimator = super::estimator(&args.estimator, args.temperature, args.sigma)?;
    if args.max_events == 0 {
        return Err(Failure::input(
            "--max-events must be at least 1",
            "leave it out for the default of 100000000 events per trajectory",
        ));
    }
    let model = Model::load(&args.file)?;
    if model.ir.params.is_empty() {
        return Err(Failure::input(
            format!(
                "`{}` has no free parameters to differentiate",
                args.file.display()
            ),
            "declare the rates to differentiate with `param` (constants declared with `const` stay fixed)",
        ));
    }
    let objective = Objective::parse(&args.objective, &model.ir)
        .map_err(|e| Failure::Input(e.render(style())))?;
    if !(args.t_end.is_finite() && args.t_end > 0.0) {
        return Err(Failure::input(
            format!("--t-end must be a positive time, not {}", num(args.t_end)),
            "for example --t-end 50",
        ));
    }
    if args.trajectories < 2 {
        return Err(Failure::input(
            format!(
                "-n must be at least 2 (standard errors need two trajectories), not {}",
                args.trajectories
            ),
            "for example -n 1000",
        ));
    }
    super::set_threads(args.threads)?;
    let compiled = CompiledModel::with_kernels(&model.ir, estimator.kernels())
        .map_err(|e| super::simulate::compile_failure(&model, e))?;
    let params = model.ir.param_values();
    let options = GradOptions {
        t_end: args.t_end,
        trajectories: args.trajectories,
        seed: args.seed,
        estimator,
        max_events: args.max_events,
    };
    let result =
        estimate_gradient(&compiled, &params, &objective, &options).map_err(|e| match e {
            GradError::Simulation(e) => sim_failure(&model, e),
            GradError::Options(m) => match m.split_once("; ") {
                Some((message, why)) => Failure::input(message, why),
                None => Failure::input(m, "see rxnc grad --help"),
            },
            e @ GradError::NonFinite { .. } => {
                Failure::input(e, "see docs/gradients.md for when each estimator applies")
            }
        })?;
    // On standard error, so that --json stays the contract's object.
    for warning in &result.warnings {
        eprintln!("warning: {warning}");
    }
    let text = if args.json {
        let gradient: serde_json::Map<String, serde_json::Value> = result
            .gradient
            .iter()
            .map(|(name, e)| {
                (
                    name.clone(),
                    serde_json::json!({"estimate": e.estimate, "stderr": e.stderr}),
                )
            })
            .collect();
        let value = serde_json::json!({
            "objective": {"estimate": result.objective.estimate, "stderr": result.objective.stderr},
            "gradient": gradient,
            "estimator": result.estimator,
            "trajectories": result.trajectories,
        });
        format!("{value}\n")
    } else {
        let mut out = String::new();
        let detail = match estimator {
            Estimator::GsSt { temperature } => format!(" (temperature {})", num(temperature)),
            Estimator::Fd { sigma } => format!(" (sigma {})", num(sigma)),
            _ => String::new(),
        };
        let _ = writeln!(out, "objective  {}", objective.text);
        let _ = writeln!(
            out,
            "estimate   {:.6e} ± {:.3e} (standard error)",
            result.objective.estimate, result.objective.stderr
        );
        let _ = writeln!(
            out,
            "estimator  {}{detail}, {} trajectories to t = {}, {} events\n",
            result.estimator,
            result.trajectories,
            num(args.t_end),
            result.events
        );
        let width = result
            .gradient
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(9)
            .max(9);
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>14}  {:>12}",
            "parameter", "value", "gradient", "stderr"
        );
        for ((name, e), v) in result.gradient.iter().zip(&params) {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>12}  {:>14.6e}  {:>12.3e}",
                cell(*v, 6),
                e.estimate,
                e.stderr
            );
        }
        out
    };
    print_stdout(&text)
}
