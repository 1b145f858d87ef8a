//! gumbelrs: Gumbel-Softmax / Concrete sampling kernels.
//!
//! The core is plain Rust over slices: a counter-based RNG ([`rng`]), the
//! elementary functions every device shares ([`math`]), row and elementwise
//! kernels ([`kernels`]), exact solvers and relaxations for structures
//! ([`structured`]) and a thread pool ([`parallel`]). The `python`
//! feature adds the PyO3 bindings (`gumbelrs._core`) and nothing else.

pub mod isa;
pub mod kernels;
pub mod math;
pub mod memory;
pub mod parallel;
pub mod rng;
pub mod structured;

#[cfg(feature = "python")]
mod python;

pub use kernels::bernoulli::{
    hard_concrete_backward, hard_concrete_forward, relaxed_bernoulli_backward,
    relaxed_bernoulli_forward,
};
pub use kernels::noise::{noise, Noise};
pub use kernels::order::SortKey;
pub use kernels::sampling::{gumbel_given_argmax, gumbel_topk, sample_categorical};
pub use kernels::softmax::{gumbel_softmax_backward, gumbel_softmax_forward};
pub use kernels::{Dims, Fault, FaultKind, KernelError, OutputMode, Outputs, Tau};
pub use math::Real;
pub use rng::Stream;
pub use structured::assignment::linear_assignment;
pub use structured::grid_path::shortest_path_grid;
pub use structured::sinkhorn::{
    gumbel_sinkhorn_backward, gumbel_sinkhorn_forward, Sinkhorn, SinkhornOutputs, Square,
};
pub use structured::spanning_tree::{sample_spanning_tree, spanning_tree};
