//! Kernels of structured relaxations: the relaxation of a discrete
//! structure (a permutation) whose gradient stands in for the exact one.

pub mod sinkhorn;
