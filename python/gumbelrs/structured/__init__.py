"""Gumbel-perturbed structures ("softened classics").

Plackett-Luce permutations, exact matchings, Gumbel-Sinkhorn matrices,
relaxed sorts and subsets. A Plackett-Luce ranking of items with scores ``s`` picks the first
item with probability ``softmax(s)``, the next from the softmax of the
remaining scores, and so on; sorting ``s + g`` with i.i.d. standard Gumbel
noise ``g`` draws exactly that ranking (Yellott 1977), which is what
:func:`sample_permutation` does with the Gumbel-top-k kernel. Its
distribution is :class:`gumbelrs.distributions.PlackettLuce`.

:func:`matching` is the exact solver of the linear assignment problem (a
Rust kernel, batched and parallel across the batch): the permutation that a
perturbed matching (``matching(log_alpha + g)``) draws.

Relaxed sorts and subsets: :func:`soft_sort` is a row-stochastic relaxation of
the permutation matrix that sorts scores in decreasing order (NeuralSort,
Grover et al. 2019, or SoftSort, Prillo and Eisenschlos 2020);
:func:`stochastic_sort` applies it to the Plackett-Luce perturbation
``scores + g`` (the permutations of :func:`sample_permutation`);
:func:`relaxed_topk` relaxes the k-hot of the Gumbel-top-k (Xie and Ermon
2019). With ``hard=True`` each returns the exact 0/1 answer, with the
relaxation's gradient. :func:`kendall_tau`, :func:`proportion_all_correct` and
:func:`proportion_wrong` score predicted permutations against true ones.

Gumbel-Sinkhorn matrices (:func:`gumbel_sinkhorn`; Mena et al. 2018): a
matrix of log-weights plus Gumbel noise, divided by a temperature and
normalised in log space by alternating row and column logsumexps, is a
nearly doubly stochastic relaxation of the permutation matrix of the
maximum-weight matching of the perturbed weights; ``hard=True`` returns
that permutation matrix exactly, with the relaxation's gradient.

Graphs (Rust solvers, batched and parallel across the batch, on the CPU):
:func:`shortest_path_grid` is the 0/1 indicator of a cheapest 8-neighbour
path from the top-left to the bottom-right cell of a grid of non-negative
vertex costs (Dijkstra); :func:`spanning_tree` is the 0/1 edge indicator of
the maximum-weight spanning tree of a symmetric weight matrix (-inf forbids
an edge); :func:`sample_spanning_tree` perturbs the weights with symmetric
Gumbel noise first, which draws a random spanning tree (the perturbed
Kruskal of Paulus et al. 2020). Ties are broken by documented rules, the
same for any number of threads.

Perturbed optimizers make any exact solver differentiable. :func:`perturbed`
(Berthet et al. 2020) wraps a batched argmax-type ``solver`` (``theta -> y``,
maximising ``<theta, y>``) into ``y_eps(theta) = E[solver(theta + sigma Z)]``
over Gumbel or normal noise ``Z``, estimated from ``n_samples`` draws solved
in one call, with the Monte-Carlo gradient of the same samples; with Gumbel
noise and the argmax one-hot it is ``softmax(theta / sigma)``.
:func:`fenchel_young_loss` is their loss for learning ``theta`` from target
solutions, whose gradient is ``y_eps(theta) - y_true``. :func:`blackbox`
(Vlastelica et al. 2020) returns the exact solution and, backward, the
gradient of a piecewise-linear interpolation of the loss, from one more
solver call.

Random spanning trees (Paulus et al. 2020): :func:`relaxed_spanning_tree`
returns the edge marginals of the distribution over the spanning trees of a
weighted graph, ``p(T) ∝ exp(sum_{e in T} (w_e + g_e) / tau)`` with Gumbel
noise ``g``, computed with the matrix-tree theorem in float64; they relax the
tree that :func:`sample_spanning_tree` draws with the same noise, which
``hard=True`` returns exactly, with the marginals' gradient.
"""

from ._graphs import sample_spanning_tree, shortest_path_grid, spanning_tree
from ._permutations import (
    SORT_METHODS as SORT_METHODS,
)
from ._permutations import (
    gumbel_sinkhorn,
    kendall_tau,
    matching,
    proportion_all_correct,
    proportion_wrong,
    relaxed_topk,
    sample_permutation,
    soft_sort,
    stochastic_sort,
)
from ._perturbed import (
    NOISES as NOISES,
)
from ._perturbed import (
    Blackbox,
    Perturbed,
    blackbox,
    fenchel_young_loss,
    perturbed,
)
from ._trees import relaxed_spanning_tree

__all__ = [
    "Blackbox",
    "Perturbed",
    "blackbox",
    "fenchel_young_loss",
    "gumbel_sinkhorn",
    "kendall_tau",
    "matching",
    "perturbed",
    "proportion_all_correct",
    "proportion_wrong",
    "relaxed_spanning_tree",
    "relaxed_topk",
    "sample_permutation",
    "sample_spanning_tree",
    "shortest_path_grid",
    "soft_sort",
    "spanning_tree",
    "stochastic_sort",
]
