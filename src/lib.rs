//! rxnc: a compiler and toolkit for stochastic reaction networks.
//!
//! A model is a `.rxn` text file. [`Model::parse`] parses and checks it, reporting every problem at
//! once as a [`ModelError`]; [`jit::CompiledModel`] compiles its propensities and state updates to
//! machine code with Cranelift; [`engine`] runs exact Gillespie simulations on it, in parallel and
//! reproducibly.
//!
//! ```
//! use rxnc::{Model, engine::{Ensemble, SimOptions}};
//!
//! let model = Model::parse("birth_death.rxn", "
//!     species X = 0
//!     param k = 10
//!     const g = 1
//!     0 -> X @ k
//!     X -> 0 @ g
//! ").unwrap();
//! let compiled = rxnc::jit::CompiledModel::new(&model.ir).unwrap();
//! let options = SimOptions { t_end: 20.0, every: 1.0, trajectories: 200, seed: 1, ..SimOptions::default() };
//! let ensemble = Ensemble::run(&compiled, &model.ir.param_values(), &options).unwrap();
//! let last = ensemble.times.len() - 1;
//! let mean: f64 = (0..200).map(|n| ensemble.state(n, last)[0] as f64).sum::<f64>() / 200.0;
//! assert!((mean - 10.0).abs() < 1.5); // Poisson(10) at stationarity
//! ```
//!
//! Gradients of expectations over exact trajectories ([`estimators`]):
//!
//! ```
//! use rxnc::estimators::{Estimator, GradOptions, Objective, estimate_gradient};
//!
//! let model = rxnc::Model::parse("bd.rxn", "species X\nparam k = 10, g = 1\n0 -> X @ k\nX -> 0 @ g\n").unwrap();
//! let compiled = rxnc::jit::CompiledModel::new(&model.ir).unwrap();
//! let objective = Objective::parse("mean(X)", &model.ir).unwrap();
//! let options = GradOptions {
//!     t_end: 2.0, trajectories: 2000, seed: 1, estimator: Estimator::Score, max_events: 1_000_000,
//! };
//! let result = estimate_gradient(&compiled, &model.ir.param_values(), &objective, &options).unwrap();
//! // E[X(2)] = k/g (1 - e^{-2g}): d/dk = 0.865
//! let (name, dk) = &result.gradient[0];
//! assert_eq!(name, "k");
//! assert!((dk.estimate - 0.865).abs() < 5.0 * dk.stderr);
//! ```
//!
//! Compiling takes a fraction of a millisecond per kernel; a tool that compiles the same models in
//! many processes can keep their machine code on disk with [`jit::set_code_cache`], as the `rxnc`
//! command line does.

// `!(v >= 0.0)` is how NaN-or-negative is tested on purpose; index loops over several parallel
// arrays (reactions × parameters) read better than zipped iterators; float guards like
// `if x == 0.0` are clearer than float literal patterns.
#![allow(
    clippy::neg_cmp_op_on_partial_ord,
    clippy::needless_range_loop,
    clippy::redundant_guards
)]

pub mod cli;
pub mod diagnostics;
pub mod driver;
pub mod engine;
pub mod estimators;
pub mod ir;
pub mod jit;
pub mod syntax;

pub use diagnostics::{Diagnostic, ModelError, SourceFile};

use std::path::Path;

/// A parsed and checked model with its source.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file it came from (for diagnostics).
    pub source: SourceFile,
    /// The checked model.
    pub ir: ir::Model,
}

/// Reading a model from disk failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid model.
    #[error("{0}")]
    Model(#[from] ModelError),
}

impl Model {
    /// Parses and checks a model from text; `name` is shown in diagnostics.
    pub fn parse(name: &str, text: &str) -> Result<Model, ModelError> {
        let source = SourceFile::new(name, text);
        let file = syntax::parse(text).map_err(|d| ModelError {
            source: source.clone(),
            diagnostics: vec![d],
        })?;
        let ir = ir::lower(&file).map_err(|diagnostics| ModelError {
            source: source.clone(),
            diagnostics,
        })?;
        Ok(Model { source, ir })
    }

    /// Reads, parses and checks a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, LoadError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: shown.clone(),
            source,
        })?;
        Ok(Model::parse(&shown, &text)?)
    }
}
