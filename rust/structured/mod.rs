//! Exact solvers for the structures of `gumbelrs.structured`: the hard
//! answer that a perturbation feeds and a relaxation differentiates.

pub mod assignment;
