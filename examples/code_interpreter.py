"""The seed's data-science example as a code-interpreter session: a CSV analysed with pandas in a Jupyter kernel,
its `describe()` as an HTML table, and a matplotlib chart, both saved here (weather-summary.html, weather.png).

Run with a server up (`make up`, as root) and SANDHIVE_API_KEY set (`sandhive keys create`):

    .venv/bin/python examples/code_interpreter.py [weather.png]

The sandbox comes from the built-in template `code-interpreter-v1` (pandas and matplotlib inside). Its first use
builds it (a few minutes from PyPI; `make code-interpreter-template` builds it ahead), hence the long
request_timeout of the create.
"""

import sys

from sandhive import CodeInterpreter

CSV = """day,temperature,humidity
Mon,21.5,45
Tue,23.1,50
Wed,19.8,62
Thu,25.4,38
Fri,22.0,55
Sat,24.7,41
"""

png_path = sys.argv[1] if len(sys.argv) > 1 else "weather.png"
html_path = png_path.rsplit(".", 1)[0] + "-summary.html"

with CodeInterpreter.create(request_timeout=900) as sandbox:
    sandbox.files.write("/home/user/weather.csv", CSV)

    # State stays in the kernel between calls: `df` is there for the next cell.
    summary = sandbox.run_code("""
import pandas as pd
df = pd.read_csv("/home/user/weather.csv")
df.describe()
""")
    if summary.error:
        raise SystemExit(f"{summary.error.name}: {summary.error.value}\n{summary.error.traceback}")
    table = summary.results[0]
    print(table.text)  # the table as text; table.html is the HTML table a notebook would show
    with open(html_path, "w") as f:
        f.write(table.html or "")
    print(f"describe() as an HTML table saved to {html_path}")

    chart = sandbox.run_code("""
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(df["day"], df["temperature"], marker="o", label="temperature (°C)")
ax.bar(df["day"], df["humidity"], alpha=0.3, label="humidity (%)")
ax.set_title("Weather this week")
ax.set_xlabel("day")
ax.legend()
plt.show()
""", on_stderr=lambda message: print(message, end="", file=sys.stderr))
    if chart.error:
        raise SystemExit(f"{chart.error.name}: {chart.error.value}\n{chart.error.traceback}")
    plot = next(result for result in chart.results if result.png)
    with open(png_path, "wb") as f:
        f.write(plot.png_bytes() or b"")
    print(f"chart saved to {png_path}")
