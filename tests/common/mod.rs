//! Shared by the property tests: a generator of rate-law expressions over species A, B, C,
//! parameters k1, k2, time, numbers, every operator and every built-in function.

use proptest::prelude::*;

/// The generated expressions' species.
pub const SPECIES: [&str; 3] = ["A", "B", "C"];
/// The generated expressions' parameters.
pub const PARAMS: [&str; 2] = ["k1", "k2"];

/// A name, `t`, or a number.
pub fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(SPECIES.to_vec()).prop_map(str::to_string),
        prop::sample::select(PARAMS.to_vec()).prop_map(str::to_string),
        Just("t".to_string()),
        (0u32..6).prop_map(|n| n.to_string()),
        (1u32..1000).prop_map(|n| format!("{}", n as f64 / 100.0)),
    ]
}

/// An expression of depth up to 5.
pub fn expression() -> impl Strategy<Value = String> {
    leaf().prop_recursive(5, 40, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "^"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (
                prop::sample::select(vec!["exp", "log", "sqrt", "abs"]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            (
                prop::sample::select(vec!["min", "max", "pow"]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(f, a, b)| format!("{f}({a}, {b})")),
            (
                prop::sample::select(vec!["hill", "hillr"]),
                inner.clone(),
                inner.clone(),
                1u32..5
            )
                .prop_map(|(f, a, b, n)| format!("{f}({a}, {b}, {n})")),
            (inner.clone(), 1u32..6).prop_map(|(a, n)| format!("{a}^{n}")),
        ]
    })
}
