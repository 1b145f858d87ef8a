//! Exact solvers and relaxations for the structures of `gumbelrs.structured`:
//! the hard answer that a perturbation feeds, and the relaxation of a
//! discrete structure whose gradient stands in for the exact one.

pub mod assignment;
pub mod grid_path;
pub mod sinkhorn;
pub mod spanning_tree;
