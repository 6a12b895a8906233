"""Renderings of token relevances: Captum's text visualizer, HTML pages, matplotlib heatmaps, terminal."""

from captum_mamba.visualization.captum_records import visualization_record, visualize_text
from captum_mamba.visualization.heatmap import compare_methods_figure, heatmap_figure, save_heatmap
from captum_mamba.visualization.html import TokenExplanation, heatmap_html
from captum_mamba.visualization.terminal import render_terminal

__all__ = [
    "TokenExplanation",
    "compare_methods_figure",
    "heatmap_figure",
    "heatmap_html",
    "render_terminal",
    "save_heatmap",
    "visualization_record",
    "visualize_text",
]
