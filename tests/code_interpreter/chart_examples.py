"""matplotlib code of the kinds E2B's docs chart (line, scatter, bar, pie, box, subplots, an unsupported plot), run by
tests/code_interpreter/test_charts.py in a sandbox and, where the host has matplotlib, by
tests/unit/test_code_interpreter_charts.py against `charts.read_figure` directly. Each ends in `plt.show()`."""

from __future__ import annotations

HEADER = "import matplotlib.pyplot as plt\nimport numpy as np\n"

LINE = HEADER + """
x = np.linspace(0, 2 * np.pi, 50)
plt.figure(figsize=(8, 5))
plt.plot(x, np.sin(x), label="sin(x)")
plt.plot(x, np.cos(x), label="cos(x)")
plt.title("Sine and cosine")
plt.xlabel("Angle (rad)")
plt.ylabel("Value")
plt.legend()
plt.grid(True)
plt.show()
"""

SCATTER = HEADER + """
rng = np.random.default_rng(0)
x = rng.random(40)
plt.scatter(x, 2 * x + rng.random(40), label="samples")
plt.scatter([0.5], [2.5], c="red", label="centre")
plt.title("Random points")
plt.xlabel("x")
plt.ylabel("y")
plt.legend()
plt.show()
"""

BAR = HEADER + """
plt.bar(["A", "B", "C", "D"], [10, 20, 15, 25], color="skyblue", edgecolor="black")
plt.title("Sales by product")
plt.xlabel("Product")
plt.ylabel("Sales [units]")
plt.show()
"""

GROUPED_BAR = HEADER + """
labels = ["Q1", "Q2", "Q3"]
x = np.arange(len(labels))
fig, ax = plt.subplots()
ax.bar(x - 0.2, [5, 7, 9], 0.4, label="2023")
ax.bar(x + 0.2, [6, 8, 10], 0.4, label="2024")
ax.set_xticks(x, labels)
ax.set_title("Revenue")
ax.legend()
plt.show()
"""

PIE = HEADER + """
plt.pie([35, 25, 25, 15], labels=["Rent", "Food", "Travel", "Other"], autopct="%1.1f%%")
plt.title("Budget")
plt.show()
"""

BOX = HEADER + """
data = {"Class A": [85, 90, 78, 92, 88], "Class B": [95, 89, 76, 91, 84, 87], "Class C": [75, 82, 88, 79, 86, 40]}
fig, ax = plt.subplots(figsize=(10, 6))
ax.boxplot(data.values(), tick_labels=data.keys(), patch_artist=True)
ax.set_title("Exam Scores Distribution")
ax.set_xlabel("Class")
ax.set_ylabel("Score")
plt.show()
"""

# (label, min, first_quartile, median, third_quartile, max, outliers): numpy's linear percentiles, whiskers at 1.5 IQR
BOX_ELEMENTS = [("Class A", 78.0, 85.0, 88.0, 90.0, 92.0, []),
                ("Class B", 84.0, 84.75, 88.0, 90.5, 95.0, [76.0]),
                ("Class C", 75.0, 76.0, 80.5, 85.0, 88.0, [40.0])]

SUBPLOTS = HEADER + """
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
left.plot([1, 2, 3], [1, 4, 9], label="squares")
left.set_title("Line")
right.scatter([1, 2, 3], [3, 2, 1])
right.set_title("Scatter")
fig.suptitle("Two plots")
plt.show()
"""

UNSUPPORTED = HEADER + """
plt.imshow(np.arange(16).reshape(4, 4))
plt.title("Heat")
plt.show()
"""
