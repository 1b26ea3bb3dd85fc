"""Chart extraction (issue 15) through the released `e2b_code_interpreter` 2.11.5: a matplotlib figure shown in the
sandbox gives its PNG and, in the same result, `chart` — parsed by the client's own `charts.py` into its typed
objects. The plots are those of E2B's docs (`chart_examples`)."""

from __future__ import annotations

import base64

import pytest
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)

from tests.code_interpreter import chart_examples as examples

pytestmark = pytest.mark.timeout(1200)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shown(sandbox: Sandbox, code: str):
    """The one result `code` displays: its PNG checked, its chart returned (None if it has none)."""
    execution = sandbox.run_code(code)
    assert execution.error is None, execution.error
    assert execution.logs.stderr == []
    results = [r for r in execution.results if r.png]
    assert len(results) == 1, execution.results
    assert base64.b64decode(results[0].png).startswith(PNG_MAGIC)
    return results[0].chart


def test_a_line_chart_gives_its_title_labels_ticks_and_points(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.LINE)
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert chart.title == "Sine and cosine"
    assert (chart.x_label, chart.y_label, chart.x_unit) == ("Angle (rad)", "Value", "rad")
    assert chart.x_scale == ScaleType.LINEAR and chart.y_scale == ScaleType.LINEAR
    assert len(chart.x_ticks) == len(chart.x_tick_labels) > 2 and "0" in chart.x_tick_labels
    assert [(e.label, len(e.points)) for e in chart.elements] == [("sin(x)", 50), ("cos(x)", 50)]
    assert chart.elements[0].points[0] == (0.0, 0.0) and chart.elements[1].points[0] == (0.0, 1.0)
    assert chart.elements[0].points[-1][0] == pytest.approx(6.283185307)


def test_a_scatter_gives_a_series_per_call(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.SCATTER)
    assert isinstance(chart, ScatterChart) and chart.title == "Random points"
    assert (chart.x_label, chart.y_label) == ("x", "y")
    assert [(e.label, len(e.points)) for e in chart.elements] == [("samples", 40), ("centre", 1)]
    assert chart.elements[1].points == [(0.5, 2.5)]


def test_a_bar_chart_gives_each_category_and_value(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.BAR)
    assert isinstance(chart, BarChart) and chart.title == "Sales by product"
    assert (chart.x_label, chart.y_label, chart.y_unit) == ("Product", "Sales [units]", "units")
    assert [(e.label, e.value) for e in chart.elements] == [("A", 10), ("B", 20), ("C", 15), ("D", 25)]
    grouped = shown(sandbox, examples.GROUPED_BAR)
    assert [(e.label, e.group, e.value) for e in grouped.elements] == [
        ("Q1", "2023", 5), ("Q2", "2023", 7), ("Q3", "2023", 9), ("Q1", "2024", 6), ("Q2", "2024", 8),
        ("Q3", "2024", 10)]


def test_a_pie_gives_each_slices_label_and_angle(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.PIE)
    assert isinstance(chart, PieChart) and chart.title == "Budget"
    assert [(e.label, e.angle, e.radius) for e in chart.elements] == [
        ("Rent", 126, 1), ("Food", 90, 1), ("Travel", 90, 1), ("Other", 54, 1)]


def test_a_box_plot_gives_each_boxs_five_numbers_and_outliers(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.BOX)
    assert isinstance(chart, BoxAndWhiskerChart) and chart.title == "Exam Scores Distribution"
    assert (chart.x_label, chart.y_label) == ("Class", "Score")
    assert [(e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers)
            for e in chart.elements] == examples.BOX_ELEMENTS


def test_subplots_give_a_superchart_of_their_charts(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.SUBPLOTS)
    assert isinstance(chart, SuperChart) and chart.title == "Two plots"
    assert [(type(e), e.title) for e in chart.elements] == [(LineChart, "Line"), (ScatterChart, "Scatter")]
    assert chart.elements[0].elements[0].points == [(1, 1), (2, 4), (3, 9)]


def test_an_unsupported_plot_still_gives_its_png_and_no_typed_chart(sandbox: Sandbox) -> None:
    chart = shown(sandbox, examples.UNSUPPORTED)
    assert chart is None or chart.type == ChartType.UNKNOWN
    assert shown(sandbox, "import matplotlib.pyplot as plt\nplt.figure()\nplt.text(0.5, 0.5, 'no data')\n"
                          "plt.show()") is None  # a figure without data: no chart


def test_a_figure_as_the_cells_value_carries_its_chart_too(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                                 "ax.plot([1, 2], [3, 4])\nplt.close(fig)\nfig")
    assert execution.error is None, execution.error
    result = execution.results[0]
    assert result.is_main_result and result.png and isinstance(result.chart, LineChart)
    assert result.chart.elements[0].points == [(1, 3), (2, 4)]
