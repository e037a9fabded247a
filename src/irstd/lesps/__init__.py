"""LESPS: label evolution with single point supervision (Ying et al., CVPR 2023)."""

from irstd.lesps.evolution import connected_components, evolve_labels

__all__ = ["connected_components", "evolve_labels"]
