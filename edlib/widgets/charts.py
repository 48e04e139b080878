"""Putting a plotly figure into a panel so that it draws in every notebook front end.

JupyterLab, VS Code and RunPod's JupyterLab draw plotly's own mime bundle inside an
ipywidgets `Output`. Colab does not: a plotly figure redrawn inside an `Output` fails there
with "Plotly is not defined", and `FigureWidget` does not work at all (colabtools #5889,
colab-cdn-widget-manager #51). On Colab the figure goes in as a self-contained HTML page in
an iframe (plotly.js from its CDN, as Colab's own plotly renderer loads it), which needs
nothing from the page around it.

The output list is replaced as a whole instead of `with output: display(...)`, so a
figure can be shown from any thread (the training panel redraws from the training thread).
"""

from __future__ import annotations

import html
import sys

import ipywidgets as widgets
import plotly.graph_objects as go

PLOTLY_MIME = "application/vnd.plotly.v1+json"
# No toolbar: on these small charts plotly's modebar covers their top-right corner (a legend,
# the last points), and zooming or saving them is not what a panel is for.
CHART_CONFIG = {"displayModeBar": False, "displaylogo": False}


def panel_layout(figure: go.Figure, title: str, *, height: int, left: int = 50, legend_y: float | None = None, **axes) -> go.Figure:
    """The panels' chart style: a small title, 480 px wide, tight margins, the legend (if
    any) in a row below the plot; `axes` are plotly layout keys (xaxis_title=..., yaxis=...)."""
    legend = {} if legend_y is None else {"legend": {"orientation": "h", "y": legend_y}}
    figure.update_layout(
        title={"text": title, "font_size": 14}, height=height, width=480, margin={"t": 40, "l": left, "r": 10, "b": 40},
        **legend, **axes,
    )  # fmt: skip
    return figure


def on_colab() -> bool:
    return "google.colab" in sys.modules


def figure_bundle(figure: go.Figure, *, colab: bool | None = None) -> dict:
    """The mime bundle that shows `figure`: plotly's own, or on Colab an iframe page."""
    title = figure.layout.title.text or "chart"
    if not (on_colab() if colab is None else colab):
        bundle = figure._repr_mimebundle_()
        if PLOTLY_MIME in bundle:
            bundle[PLOTLY_MIME] = {**bundle[PLOTLY_MIME], "config": CHART_CONFIG}
        return {"text/plain": f"<plotly figure: {title}>", **bundle}
    page = figure.to_html(include_plotlyjs="cdn", full_html=True, config=CHART_CONFIG)
    width = f"{figure.layout.width + 20}px" if figure.layout.width else "100%"
    height = (figure.layout.height or 450) + 20
    frame = (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" title="{html.escape(title)}" '
        f'style="border:none;width:{width};height:{height}px"></iframe>'
    )
    return {"text/plain": f"<plotly figure: {title}>", "text/html": frame}


def show_figure(output: widgets.Output, figure: go.Figure, *, colab: bool | None = None) -> None:
    """Show `figure` in `output`, replacing what it showed."""
    output.outputs = ({"output_type": "display_data", "data": figure_bundle(figure, colab=colab), "metadata": {}},)
