"""Renderings of relevances: Captum's text visualizer, HTML pages, matplotlib heatmaps, terminal, images."""

from captum_mamba.visualization.captum_records import visualization_record, visualize_text
from captum_mamba.visualization.heatmap import compare_methods_figure, heatmap_figure, save_heatmap
from captum_mamba.visualization.html import TokenExplanation, heatmap_html
from captum_mamba.visualization.image import (
    ImageExplanation,
    image_heatmap_figure,
    image_report_html,
    to_captum_layout,
    write_image_heatmap_png,
)
from captum_mamba.visualization.terminal import render_terminal

__all__ = [
    "ImageExplanation",
    "TokenExplanation",
    "compare_methods_figure",
    "heatmap_figure",
    "heatmap_html",
    "image_heatmap_figure",
    "image_report_html",
    "render_terminal",
    "save_heatmap",
    "to_captum_layout",
    "visualization_record",
    "visualize_text",
    "write_image_heatmap_png",
]
