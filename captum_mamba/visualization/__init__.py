"""Renderings of token relevances: HTML pages and matplotlib heatmaps."""

from captum_mamba.visualization.heatmap import heatmap_figure, save_heatmap
from captum_mamba.visualization.html import TokenExplanation, heatmap_html

__all__ = ["TokenExplanation", "heatmap_figure", "heatmap_html", "save_heatmap"]
