"""How the training panel puts a plotly chart on screen: the one place to change if a
front end needs charts shown another way."""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go


def show_figure(output: widgets.Output, figure: go.Figure) -> None:
    """Put `figure` in `output` by replacing its outputs: safe from the training thread.
    The bundle is what `display(figure)` sends, in plotly's renderer for this front end."""
    data = {"text/plain": f"<plotly figure: {figure.layout.title.text}>", **figure._repr_mimebundle_()}
    output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)
