"""matplotlib figures → the `e2b/chart` data of E2B's `Result.chart` (the client's `charts.py` parses it).

Two layers, so that the host (which has no matplotlib) tests the second:

- `read_figure(figure)` reads a live matplotlib `Figure` into plain data — per axes its title, labels, ticks,
  scales and its artists, each described by kind (`line`, `path_collection`, `wedge`, `path_patch`, `rectangle`,
  `other`) with the numbers that matter — and the bar containers. It imports matplotlib, inside the function:
  it runs only in a code-interpreter kernel.
- `chart(data)` is pure: it classifies each axes (line, scatter, bar, pie, box_and_whisker, unknown; several axes
  make a superchart) and builds the dict the client expects.

`figure_chart(figure)` is both, and what the kernel's `e2b/chart` display formatter calls (`server.CHART_SETUP`):
it never raises — a figure it cannot read gives no chart, and the PNG is shown as ever.

The dict per type (every key present, as the client indexes them):

| type | keys |
|---|---|
| all | `type`, `title`, `elements` |
| bar | + `x_label`, `y_label`, `x_unit`, `y_unit`; elements `{label, group, value}` |
| box_and_whisker | + the same; elements `{label, min, first_quartile, median, third_quartile, max, outliers}` |
| line, scatter | + the same, `x_ticks`, `x_tick_labels`, `x_scale` and their `y_` twins; elements `{label, points}` |
| pie | elements `{label, angle, radius}` (angle in degrees, to 1/1000: matplotlib keeps them as float32) |
| superchart | elements: one chart per axes; `title` the figure's suptitle |
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

Data = dict[str, Any]
UNIT = re.compile(r"\s\((.*?)\)|\[(.*?)\]")  # "Time (s)" or "Time [s]" → "s"
DIGITS = 10  # significant digits kept of a box's numbers (the noise of float arithmetic goes, so edges compare)


def figure_chart(figure: Any) -> Data | None:
    """The `e2b/chart` of a matplotlib figure, or None (a blank figure, or one that could not be read)."""
    try:
        return chart(read_figure(figure))
    except Exception:  # noqa: BLE001 — a chart is extra: never an error in the user's cell
        return None


# ---- the pure part: plain data → the client's chart dict ----------------------------------------------------------

def chart(figure: Data) -> Data | None:
    axes = figure.get("axes") or []
    if not any(ax.get("has_data") for ax in axes):
        return None
    if len(axes) > 1:
        return {"type": "superchart", "title": figure.get("suptitle") or None,
                "elements": [axes_chart(ax) for ax in axes]}
    return axes_chart(axes[0])


def axes_chart(ax: Data) -> Data:
    kind = chart_type(ax)
    build = {"line": line_chart, "scatter": scatter_chart, "bar": bar_chart, "pie": pie_chart,
             "box_and_whisker": box_chart}.get(kind)
    if build is not None:
        try:
            return build(ax)
        except (ValueError, KeyError, IndexError, TypeError):
            pass
    return {"type": "unknown", "title": ax.get("title") or None, "elements": []}


def chart_type(ax: Data) -> str:
    artists = [a for a in ax.get("artists", []) if not (a["kind"] == "line" and a.get("spanning"))]
    kinds = {a["kind"] for a in artists}
    if not artists:
        return "unknown"
    if kinds == {"line"} and not any(is_box_outline(a) for a in artists):
        return "line"
    if kinds <= {"line", "path_patch"} and boxes(ax) and all(is_box_line(a) for a in artists if a["kind"] == "line"):
        return "box_and_whisker"
    if kinds == {"path_collection"}:
        return "scatter"
    if kinds == {"wedge"}:
        return "pie"
    if kinds == {"rectangle"} and ax.get("bars"):
        return "bar"
    return "unknown"


def labelled(ax: Data) -> Data:
    """The keys of every 2D chart: title, axis labels and the units in them."""
    x_label, y_label = ax.get("x_label") or None, ax.get("y_label") or None
    return {"title": ax.get("title") or None, "x_label": x_label, "y_label": y_label,
            "x_unit": unit(x_label), "y_unit": unit(y_label)}


def unit(label: str | None) -> str | None:
    match = UNIT.search(label) if label else None
    return (match.group(1) or match.group(2)) if match else None


def scale(axis: Data) -> str:
    if axis.get("converter") == "date":
        return "datetime"
    if axis.get("converter") == "category":
        return "categorical"
    return str(axis.get("scale") or "linear")


def point_chart(ax: Data, kind: str, elements: list[Data]) -> Data:
    out = {"type": kind, **labelled(ax)}
    for name in ("x", "y"):
        axis = ax.get(name, {})
        out[f"{name}_ticks"] = [plain(t) for t in axis.get("ticks", [])]
        out[f"{name}_tick_labels"] = [str(t) for t in axis.get("tick_labels", [])]
        out[f"{name}_scale"] = scale(axis)
    out["elements"] = elements
    return out


def series_label(label: str | None, prefix: str, index: int) -> str:
    """The artist's label; matplotlib's defaults (`_child3`, `_collection0`, ...) become "Line 3" / "Series 1"."""
    if label and not label.startswith("_"):
        return label
    number = re.search(r"(\d+)$", label or "")
    return f"{prefix} {int(number.group(1)) if number else index}"


def line_chart(ax: Data) -> Data:
    lines = [a for a in ax["artists"] if a["kind"] == "line" and not a.get("spanning")]
    elements = [{"label": series_label(line.get("label"), "Line", i),
                 "points": [[plain(x), plain(y)] for x, y in zip(line["x"], line["y"], strict=False)]}
                for i, line in enumerate(lines)]
    return point_chart(ax, "line", elements)


def scatter_chart(ax: Data) -> Data:
    elements = [{"label": series_label(c.get("label"), "Series", i),
                 "points": [[plain(x), plain(y)] for x, y in c["offsets"]]}
                for i, c in enumerate(a for a in ax["artists"] if a["kind"] == "path_collection")]
    return point_chart(ax, "scatter", elements)


def nearest_label(ticks: list[Any], labels: list[str], at: float) -> str:
    """The tick label nearest `at` (a bar's or box's centre): bars offset within a group keep their category."""
    pairs = [(abs(float(t) - at), label) for t, label in zip(ticks, labels, strict=False)
             if isinstance(t, (int, float)) and label]
    return min(pairs)[1] if pairs else str(plain(at))


def bar_chart(ax: Data) -> Data:
    horizontal = all(bars.get("orientation") == "horizontal" for bars in ax["bars"])
    out = {"type": "bar", **labelled(ax)}
    if horizontal:  # the category axis is y: it is the chart's x, as E2B's
        out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
        out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
    category = ax.get("y" if horizontal else "x", {})
    elements = []
    for i, bars in enumerate(ax["bars"]):
        group = series_label(bars.get("label"), "Group", i)
        for rect in bars["rects"]:
            if horizontal:
                centre, value = rect["y"] + rect["height"] / 2, rect["width"]
            else:
                centre, value = rect["x"] + rect["width"] / 2, rect["height"]
            label = nearest_label(category.get("ticks", []), category.get("tick_labels", []), centre)
            elements.append({"label": label, "group": group, "value": plain(value)})
    out["elements"] = elements
    return out


def pie_chart(ax: Data) -> Data:
    elements = [{"label": w.get("label") or "", "angle": round(abs(w["theta2"] - w["theta1"]), 3),
                 "radius": plain(w["r"])}
                for w in ax["artists"] if w["kind"] == "wedge"]
    return {"type": "pie", "title": ax.get("title") or None, "elements": elements}


# ---- box plots: boxes (a PathPatch with patch_artist=True, else a closed 5-point line) and the lines around them ----

def is_box_outline(line: Data) -> bool:
    xs, ys = list(line.get("x", [])), list(line.get("y", []))
    if len(xs) != 5 or len(ys) != 5 or not all(isinstance(v, (int, float)) for v in xs + ys):
        return False
    return (xs[0] == xs[1] == xs[4] and xs[2] == xs[3] and ys[0] == ys[3] == ys[4] and ys[1] == ys[2]) or \
           (ys[0] == ys[1] == ys[4] and ys[2] == ys[3] and xs[0] == xs[3] == xs[4] and xs[1] == xs[2])


def is_box_line(line: Data) -> bool:
    """A line a box plot draws: a box outline, a whisker, cap or median (2 points), or fliers (markers only)."""
    return is_box_outline(line) or len(line.get("x", [])) <= 2 or line.get("linestyle") in ("None", "none", "")


def boxes(ax: Data) -> list[tuple[float, float, float, float]]:
    """Each box as (x0, x1, y0, y1), deduplicated, in order of position."""
    found = set()
    for artist in ax.get("artists", []):
        if artist["kind"] == "path_patch" and artist.get("vertices"):
            xs = [float(v[0]) for v in artist["vertices"]]
            ys = [float(v[1]) for v in artist["vertices"]]
            found.add((rounded(min(xs)), rounded(max(xs)), rounded(min(ys)), rounded(max(ys))))
        elif artist["kind"] == "line" and is_box_outline(artist):
            xs, ys = [float(v) for v in artist["x"]], [float(v) for v in artist["y"]]
            found.add((rounded(min(xs)), rounded(max(xs)), rounded(min(ys)), rounded(max(ys))))
    return sorted(found)


def box_chart(ax: Data) -> Data:
    lines = [a for a in ax["artists"] if a["kind"] == "line" and not is_box_outline(a)]
    # a plot drawn twice (as E2B's docs do, once with patches) draws its lines twice: each counts once
    segments = sorted({tuple(zip(map(float, a["x"]), map(float, a["y"]), strict=False)) for a in lines
                       if len(a["x"]) == 2})
    fliers = sorted({tuple(zip(map(float, a["x"]), map(float, a["y"]), strict=False)) for a in lines
                     if len(a["x"]) != 2})
    vertical = box_elements(ax, segments, fliers, horizontal=False)
    horizontal = box_elements(ax, segments, fliers, horizontal=True)
    # the orientation is the one in which a segment spans each box across: its median
    found = sum(e["median"] is not None for e in horizontal) > sum(e["median"] is not None for e in vertical)
    out = {"type": "box_and_whisker", **labelled(ax)}
    if found:  # the category axis is y: it is the chart's x, as E2B's
        out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
        out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
    elements = horizontal if found else vertical
    for element in elements:
        if element["median"] is None:
            element["median"] = element["first_quartile"]
    out["elements"] = elements
    return out


Points = tuple[tuple[float, float], ...]


def box_elements(ax: Data, segments: list[Points], fliers: list[Points], *, horizontal: bool) -> list[Data]:
    """Each box's numbers, read as if the boxes stood along x (vertical); `horizontal` swaps x and y first."""
    def swap(points: Points) -> tuple[list[float], list[float]]:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return (ys, xs) if horizontal else (xs, ys)

    category = ax.get("y" if horizontal else "x", {})
    elements = []
    placed = [(box[2], box[3], box[0], box[1]) if horizontal else box for box in boxes(ax)]
    for x0, x1, y0, y1 in sorted(placed):  # in order along the category axis
        element: Data = {"label": nearest_label(category.get("ticks", []), category.get("tick_labels", []),
                                                (x0 + x1) / 2),
                         "min": y0, "first_quartile": y0, "median": None, "third_quartile": y1, "max": y1,
                         "outliers": []}
        for points in segments:
            xs, ys = swap(points)
            if not (x0 <= min(xs) and max(xs) <= x1):
                continue
            low, high = rounded(min(ys)), rounded(max(ys))
            if ys[0] == ys[1] and rounded(min(xs)) == x0 and rounded(max(xs)) == x1:  # across the box: the median
                element["median"] = low
            elif xs[0] == xs[1] and high == y0 and low < y0:  # the lower whisker
                element["min"] = low
            elif xs[0] == xs[1] and low == y1 and high > y1:  # the upper whisker
                element["max"] = high
        for points in fliers:
            xs, ys = swap(points)
            element["outliers"] += [plain(y) for x, y in zip(xs, ys, strict=False) if x0 <= x <= x1]
        elements.append(element)
    return elements


# ---- values -------------------------------------------------------------------------------------------------------

def rounded(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, DIGITS - 1 - int(math.floor(math.log10(abs(value)))))


def plain(value: Any) -> Any:
    """A JSON value: numpy scalars → int/float (NaN and infinities → None), dates → ISO 8601, str as is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and not isinstance(value, (int, float)):  # a numpy scalar
        if getattr(value, "dtype", None) is not None and str(value.dtype).startswith("datetime64"):
            return str(value.astype("datetime64[s]"))
        value = value.item()
        if isinstance(value, (datetime, date)):
            return value.isoformat()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return str(value)


# ---- the matplotlib part: runs in the kernel only -----------------------------------------------------------------

def read_figure(figure: Any) -> Data:
    """A matplotlib Figure as the plain data `chart` takes."""
    return {"suptitle": suptitle(figure), "axes": [read_axes(ax) for ax in figure.get_axes()]}


def suptitle(figure: Any) -> str | None:
    if hasattr(figure, "get_suptitle"):  # matplotlib >= 3.8
        return figure.get_suptitle() or None
    text = getattr(figure, "_suptitle", None)
    return text.get_text() if text is not None else None


def read_axes(ax: Any) -> Data:
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch, Rectangle, Wedge
    from matplotlib.text import Text

    artists: list[Data] = []
    for artist in ax.get_children():
        if artist in (ax.patch, ax.title, ax._left_title, ax._right_title, ax.xaxis, ax.yaxis) or \
                artist in ax.spines.values() or artist is ax.legend_ or isinstance(artist, Text):
            continue
        if not artist.get_visible():
            continue
        if isinstance(artist, Line2D):
            xdata: Any = artist.get_xdata()  # numpy arrays: their stubs' union types do not follow list()
            ydata: Any = artist.get_ydata()
            artists.append({"kind": "line", "label": artist.get_label(), "x": list(xdata),
                            "y": list(ydata), "linestyle": artist.get_linestyle(),
                            "spanning": artist.get_transform() is not ax.transData})  # axhline, axvline
        elif isinstance(artist, PathCollection):  # scatter (a contour, fill_between, ... is another Collection)
            offsets: Any = artist.get_offsets()
            artists.append({"kind": "path_collection", "label": artist.get_label(),
                            "offsets": [(float(x), float(y)) for x, y in offsets]})
        elif isinstance(artist, Wedge):
            artists.append({"kind": "wedge", "label": artist.get_label(), "theta1": float(artist.theta1),
                            "theta2": float(artist.theta2), "r": float(artist.r)})
        elif isinstance(artist, PathPatch):
            path: Any = artist.get_path()
            vertices = [(float(x), float(y)) for (x, y), code in zip(path.vertices, path.codes if path.codes is not None
                        else [None] * len(path.vertices), strict=False) if code != path.CLOSEPOLY]
            artists.append({"kind": "path_patch", "vertices": vertices})
        elif isinstance(artist, Rectangle):
            artists.append({"kind": "rectangle"})
        elif type(artist).__module__ == "matplotlib.axis":
            continue
        else:
            artists.append({"kind": "other", "class": type(artist).__name__})
    bars = [{"label": c.get_label(), "orientation": getattr(c, "orientation", None) or "vertical",
             "rects": [{"x": float(r.get_x()), "y": float(r.get_y()), "width": float(r.get_width()),
                        "height": float(r.get_height())} for r in c]}
            for c in ax.containers if isinstance(c, BarContainer)]
    return {"title": ax.get_title(), "x_label": ax.get_xlabel(), "y_label": ax.get_ylabel(),
            "has_data": bool(ax.has_data()), "artists": artists, "bars": bars,
            "x": read_axis(ax.xaxis, ax.get_xscale()), "y": read_axis(ax.yaxis, ax.get_yscale())}


def read_axis(axis: Any, scale_name: str) -> Data:
    from matplotlib import category, dates

    converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
    names = ("DateConverter", "ConciseDateConverter", "_SwitchableDateConverter")
    date_converters = tuple(c for c in (getattr(dates, name, None) for name in names) if c is not None)
    kind = "date" if isinstance(converter, date_converters) else \
        "category" if isinstance(converter, category.StrCategoryConverter) else None
    ticks = [float(t) for t in axis.get_ticklocs()]
    labels = [t.get_text() for t in axis.get_ticklabels()]
    if kind == "date":
        ticks = [dates.num2date(t).isoformat() for t in ticks]
    return {"ticks": ticks, "tick_labels": labels, "scale": scale_name, "converter": kind}
