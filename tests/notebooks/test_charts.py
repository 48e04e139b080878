"""Charts in panels: plotly's own bundle where it works, a self-contained iframe on Colab
(where plotly redrawn inside an ipywidgets Output fails with "Plotly is not defined")."""

import html
import re

import ipywidgets as widgets
import plotly.graph_objects as go
import plotly.io as pio

from edlib.widgets.charts import PLOTLY_MIME, show_figure


def _figure():
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[4.5, 2.25, 1.125]))
    fig.update_layout(title={"text": "training loss"}, width=480, height=260)
    return fig


def test_outside_colab_the_output_holds_plotlys_own_bundle():
    output, figure = widgets.Output(), _figure()
    show_figure(output, figure, colab=False)
    [shown] = output.outputs
    # What display(figure) sends in this front end (in a kernel: plotly's renderer's bundle).
    assert shown["data"] == {"text/plain": "<plotly figure: training loss>", **figure._repr_mimebundle_()}


def test_charts_have_no_toolbar_over_their_corner(monkeypatch):
    """Issue 19: plotly's modebar covered the right edge of the charts in notebook 02."""
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")  # JupyterLab's renderer
    output = widgets.Output()
    show_figure(output, _figure(), colab=False)
    [shown] = output.outputs
    assert shown["data"][PLOTLY_MIME]["config"]["displayModeBar"] is False
    assert shown["data"][PLOTLY_MIME]["data"][0]["y"] == [4.5, 2.25, 1.125]
    show_figure(output, _figure(), colab=True)
    assert '"displayModeBar": false' in html.unescape(output.outputs[0]["data"]["text/html"])


def test_on_colab_the_figure_is_a_page_of_its_own_in_an_iframe():
    output = widgets.Output()
    show_figure(output, _figure(), colab=True)
    show_figure(output, _figure(), colab=True)  # a redraw replaces, never appends
    [shown] = output.outputs
    frame = shown["data"]["text/html"]
    assert set(shown["data"]) == {"text/plain", "text/html"}
    assert frame.startswith("<iframe srcdoc=") and "width:500px;height:280px" in frame
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))
    # The page loads plotly.js itself and carries the data: nothing from the notebook page.
    assert re.search(r'<script[^>]+src="https://cdn\.plot\.ly/plotly-[\d.]+\.min\.js"', page)
    assert "4.5" in page and "2.25" in page and "Plotly.newPlot" in page
    assert "<script" not in frame.split("srcdoc=")[0] and '"' not in re.search(r'srcdoc="([^"]*)"', frame).group(1)
