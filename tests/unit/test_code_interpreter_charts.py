"""Chart extraction's pure part (issue 15): plain figure data — as `charts.read_figure` reads it from matplotlib inside
the sandbox — → the `e2b/chart` dict, checked with the released `e2b_code_interpreter` 2.11.5 client's own parser.
The host has no matplotlib: `read_figure` itself is tested through tests/code_interpreter/test_charts.py."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
    _deserialize_chart,
)

from sandhive.code_interpreter import charts
from sandhive.code_interpreter.charts import chart, figure_chart
from tests.code_interpreter import chart_examples as examples


def axes(artists: list[dict], *, title: str = "", x_label: str = "", y_label: str = "", bars: list | None = None,
         x: dict | None = None, y: dict | None = None) -> dict:
    return {"title": title, "x_label": x_label, "y_label": y_label, "has_data": bool(artists), "artists": artists,
            "bars": bars or [], "x": x or {"ticks": [0.0, 1.0], "tick_labels": ["0", "1"], "scale": "linear"},
            "y": y or {"ticks": [-1.0, 1.0], "tick_labels": ["−1", "1"], "scale": "linear"}}


def line(xs: list, ys: list, label: str = "_child0", linestyle: str = "-", spanning: bool = False) -> dict:
    return {"kind": "line", "label": label, "x": xs, "y": ys, "linestyle": linestyle, "spanning": spanning}


def parsed(data: dict | None):
    """What the client makes of it, after the JSON the kernel sends (no NaN: jupyter_client packs strictly)."""
    assert data is not None
    return _deserialize_chart(json.loads(json.dumps(data, allow_nan=False)))


def test_a_line_chart_has_its_title_labels_units_ticks_and_series() -> None:
    xs = [i / 10 for i in range(20)]
    figure = {"axes": [axes([line(xs, [math.sin(v) for v in xs], "sin"), line(xs, [math.cos(v) for v in xs]),
                             line([0, 1], [0, 0], spanning=True)],  # an axhline: not a series
                            title="Sine and cosine", x_label="Time (s)", y_label="Amplitude [V]")]}
    result = parsed(chart(figure))
    assert isinstance(result, LineChart) and result.type == ChartType.LINE
    assert result.title == "Sine and cosine"
    assert (result.x_label, result.y_label, result.x_unit, result.y_unit) == ("Time (s)", "Amplitude [V]", "s", "V")
    assert result.x_ticks == [0.0, 1.0] and result.y_tick_labels == ["−1", "1"] and result.x_scale == ScaleType.LINEAR
    assert [e.label for e in result.elements] == ["sin", "Line 0"]
    assert len(result.elements[0].points) == 20 and result.elements[0].points[1] == (0.1, math.sin(0.1))


def test_scales_come_from_the_axis_converter_or_its_scale() -> None:
    x = {"ticks": ["2024-01-01T00:00:00+00:00"], "tick_labels": ["Jan"], "scale": "linear", "converter": "date"}
    y = {"ticks": [1.0, 10.0], "tick_labels": ["1", "10"], "scale": "log"}
    result = parsed(chart({"axes": [axes([line(["2024-01-01"], [1.0])], x=x, y=y)]}))
    assert result.x_scale == ScaleType.DATETIME and result.y_scale == ScaleType.LOG
    category = {"ticks": [0, 1], "tick_labels": ["a", "b"], "scale": "linear", "converter": "category"}
    assert parsed(chart({"axes": [axes([line(["a", "b"], [1, 2])], x=category)]})).x_scale == ScaleType.CATEGORICAL


def test_a_scatter_gives_one_series_per_collection() -> None:
    figure = {"axes": [axes([{"kind": "path_collection", "label": "_child0", "offsets": [(1.0, 2.0), (3.0, 4.0)]},
                             {"kind": "path_collection", "label": "B", "offsets": [(5.0, 6.0)]}], title="Scatter")]}
    result = parsed(chart(figure))
    assert isinstance(result, ScatterChart) and result.title == "Scatter"
    assert [(e.label, e.points) for e in result.elements] == [("Series 0", [(1.0, 2.0), (3.0, 4.0)]),
                                                              ("B", [(5.0, 6.0)])]


def test_bars_take_the_category_of_the_nearest_tick_and_their_container_as_group() -> None:
    rect = {"kind": "rectangle"}
    x = {"ticks": [0, 1, 2], "tick_labels": ["A", "B", "C"], "scale": "linear", "converter": "category"}
    grouped = [{"label": "2023", "orientation": "vertical",
                "rects": [{"x": i - 0.4, "y": 0.0, "width": 0.4, "height": h} for i, h in enumerate([10, 20, 30])]},
               {"label": "_container1", "orientation": "vertical",
                "rects": [{"x": float(i), "y": 0.0, "width": 0.4, "height": h} for i, h in enumerate([1, 2, 3])]}]
    result = parsed(chart({"axes": [axes([rect] * 6, title="Sales", x_label="Product", y_label="Units",
                                         bars=grouped, x=x)]}))
    assert isinstance(result, BarChart) and result.title == "Sales" and result.x_label == "Product"
    assert [(e.label, e.group, e.value) for e in result.elements] == [
        ("A", "2023", 10), ("B", "2023", 20), ("C", "2023", 30), ("A", "Group 1", 1), ("B", "Group 1", 2),
        ("C", "Group 1", 3)]


def test_horizontal_bars_read_their_widths_and_swap_the_axis_labels() -> None:
    y = {"ticks": [0, 1], "tick_labels": ["A", "B"], "scale": "linear", "converter": "category"}
    bars = [{"label": "_container0", "orientation": "horizontal",
             "rects": [{"x": 0.0, "y": i - 0.4, "width": w, "height": 0.8} for i, w in enumerate([5.0, 7.5])]}]
    result = parsed(chart({"axes": [axes([{"kind": "rectangle"}] * 2, x_label="Units", y_label="Product", bars=bars,
                                         y=y)]}))
    assert (result.x_label, result.y_label) == ("Product", "Units")
    assert [(e.label, e.value) for e in result.elements] == [("A", 5.0), ("B", 7.5)]


def test_a_pie_gives_each_wedges_label_angle_and_radius() -> None:
    wedges = [{"kind": "wedge", "label": label, "theta1": a, "theta2": b, "r": 1.0}
              for label, a, b in (("A", 0.0, 108.0), ("B", 108.0, 360.00000000001))]
    result = parsed(chart({"axes": [axes(wedges, title="Shares")]}))
    assert isinstance(result, PieChart) and result.title == "Shares"
    assert [(e.label, e.angle, e.radius) for e in result.elements] == [("A", 108.0, 1.0), ("B", 252.0, 1.0)]


def box_lines(position: float, low: float, q1: float, median: float, q3: float, high: float,
              outliers: list[float], *, outline: bool) -> list[dict]:
    """What `ax.boxplot` draws for one box (width 0.5), vertical: as matplotlib 3.10 does."""
    left, right = position - 0.25, position + 0.25
    drawn = [line([position, position], [q1, low]), line([position, position], [q3, high]),
             line([position - 0.125, position + 0.125], [low, low]),
             line([position - 0.125, position + 0.125], [high, high]),
             line([left, right], [median, median]),
             line([position] * len(outliers), outliers, linestyle="None")]
    if outline:
        drawn.insert(0, line([left, right, right, left, left], [q1, q1, q3, q3, q1]))
    return drawn


def test_a_box_plot_gives_each_boxs_five_numbers_and_outliers_with_or_without_patches() -> None:
    x = {"ticks": [1, 2], "tick_labels": ["Class A", "Class B"], "scale": "linear"}
    first = box_lines(1, 78, 85, 88, 90, 92, [], outline=False)
    second = box_lines(2, 76, 84, 88, 91, 95, [60.0], outline=False)
    patches = [{"kind": "path_patch", "vertices": [(0.75, 85.0), (1.25, 85.0), (1.25, 90.0), (0.75, 90.0)]},
               {"kind": "path_patch", "vertices": [(1.75, 84.0), (2.25, 84.0), (2.25, 91.0), (1.75, 91.0)]}]
    for artists in (patches + first + second,  # patch_artist=True
                    box_lines(1, 78, 85, 88, 90, 92, [], outline=True) +
                    box_lines(2, 76, 84, 88, 91, 95, [60.0], outline=True)):
        result = parsed(chart({"axes": [axes(artists, title="Exam Scores", x_label="Class", y_label="Score", x=x)]}))
        assert isinstance(result, BoxAndWhiskerChart) and result.title == "Exam Scores"
        assert (result.x_label, result.y_label) == ("Class", "Score")
        got = [(e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers)
               for e in result.elements]
        assert got == [("Class A", 78, 85, 88, 90, 92, []), ("Class B", 76, 84, 88, 91, 95, [60.0])]


def test_several_axes_make_a_superchart_of_their_charts() -> None:
    figure = {"suptitle": "Two", "axes": [axes([line([0, 1], [0, 1], "a")], title="left"),
                                          axes([{"kind": "path_collection", "label": "b", "offsets": [(1.0, 1.0)]}])]}
    result = parsed(chart(figure))
    assert isinstance(result, SuperChart) and result.title == "Two"
    assert [type(e) for e in result.elements] == [LineChart, ScatterChart]
    assert result.elements[0].title == "left" and result.elements[1].title is None


def test_an_unsupported_plot_is_unknown_and_a_blank_figure_no_chart() -> None:
    mixed = axes([line([0, 1], [0, 1]), {"kind": "other", "class": "QuadMesh"}], title="mixed")
    result = parsed(chart({"axes": [mixed]}))
    assert result.type == ChartType.UNKNOWN and result.title == "mixed" and result.elements == []
    assert chart({"axes": [axes([])]}) is None
    assert chart({"axes": []}) is None


def test_a_figure_that_cannot_be_read_gives_no_chart_not_an_error() -> None:
    assert figure_chart(object()) is None
    broken = {"axes": [axes([{"kind": "wedge", "label": "a"}])]}  # a wedge without its angles
    assert chart(broken) == {"type": "unknown", "title": None, "elements": []}


def test_values_become_plain_json() -> None:
    class Scalar:  # a numpy scalar's interface
        dtype = "int64"

        def item(self) -> int:
            return 3

    assert charts.plain(Scalar()) == 3
    assert charts.plain(float("nan")) is None and charts.plain(float("inf")) is None
    assert charts.plain(0.1 + 0.2) == 0.1 + 0.2 and charts.rounded(0.1 + 0.2) == 0.3
    assert charts.plain("x") == "x" and charts.plain(True) is True


# ---- with matplotlib, where the host has it (the shared venv does not; the sandbox does: tests/code_interpreter) ----

def run_example(code: str) -> dict | None:
    """`figure_chart` of the figure `code` leaves, drawn off screen as in the kernel (`plt.show()` is a no-op)."""
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is not installed on this host (the sandbox's "
                                     "is: tests/code_interpreter/test_charts.py)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Agg's show() says it is non-interactive
        exec(code, {})
    try:
        return figure_chart(plt.gcf())
    finally:
        plt.close("all")


def test_read_figure_on_the_examples_of_e2bs_docs() -> None:
    line_chart = parsed(run_example(examples.LINE))
    assert isinstance(line_chart, LineChart) and line_chart.title == "Sine and cosine"
    assert [(e.label, len(e.points)) for e in line_chart.elements] == [("sin(x)", 50), ("cos(x)", 50)]
    assert line_chart.elements[1].points[0] == (0.0, 1.0) and line_chart.x_unit == "rad"
    scatter = parsed(run_example(examples.SCATTER))
    assert isinstance(scatter, ScatterChart)
    assert [(e.label, len(e.points)) for e in scatter.elements] == [("samples", 40), ("centre", 1)]
    bar = parsed(run_example(examples.BAR))
    assert [(e.label, e.value) for e in bar.elements] == [("A", 10), ("B", 20), ("C", 15), ("D", 25)]
    grouped = parsed(run_example(examples.GROUPED_BAR))
    assert [(e.label, e.group, e.value) for e in grouped.elements][:4] == [
        ("Q1", "2023", 5), ("Q2", "2023", 7), ("Q3", "2023", 9), ("Q1", "2024", 6)]
    pie = parsed(run_example(examples.PIE))
    assert [(e.label, e.angle) for e in pie.elements] == [("Rent", 126), ("Food", 90), ("Travel", 90), ("Other", 54)]
    box = parsed(run_example(examples.BOX))
    assert [(e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers)
            for e in box.elements] == examples.BOX_ELEMENTS
    superchart = parsed(run_example(examples.SUBPLOTS))
    assert isinstance(superchart, SuperChart) and superchart.title == "Two plots"
    assert [(type(e), e.title) for e in superchart.elements] == [(LineChart, "Line"), (ScatterChart, "Scatter")]
    assert parsed(run_example(examples.UNSUPPORTED)).type == ChartType.UNKNOWN


def test_read_figure_on_box_plot_variants_and_plots_that_are_not_charts() -> None:
    setup = "import matplotlib.pyplot as plt\ndata = [[85, 90, 78, 92, 88], [95, 89, 76, 91, 84, 87]]\n"
    numbers = [("A", 78, 85, 88, 90, 92, []), ("B", 84, 84.75, 88, 90.5, 95, [76])]
    for call in ("plt.boxplot(data, tick_labels=['A', 'B'])",  # lines only
                 "plt.boxplot(data, tick_labels=['A', 'B']); plt.boxplot(data, tick_labels=['A', 'B'], "
                 "patch_artist=True)",  # drawn twice, as in E2B's docs
                 "plt.boxplot(data, tick_labels=['A', 'B'], orientation='horizontal')"):
        box = parsed(run_example(setup + call))
        assert isinstance(box, BoxAndWhiskerChart), call
        assert [(e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers)
                for e in box.elements] == numbers, call
    assert run_example("import matplotlib.pyplot as plt\nplt.figure()") is None
    for code in ("plt.contourf([[1, 2], [3, 4]])", "plt.fill_between([1, 2], [1, 2])",
                 "plt.errorbar([1, 2], [3, 4], yerr=[0.1, 0.2])"):
        assert parsed(run_example("import matplotlib.pyplot as plt\n" + code)).type == ChartType.UNKNOWN, code
