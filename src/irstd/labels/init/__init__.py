"""Round-0 initialisers: pseudo-masks grown from single point labels before training."""

from irstd.labels.init.clustering import monte_carlo_clustering_masks
from irstd.labels.init.diffusion import diffusion_pseudo_masks

__all__ = ["diffusion_pseudo_masks", "monte_carlo_clustering_masks"]
