"""The seed's data-science example: pandas in a sandbox, printing `df.describe()`.

It installs pandas into the `base` template first; a template built from a Dockerfile with pandas in it
(`Sandbox(template='data-science-sandbox')`) would skip that step.
"""

from sandhive import Sandbox

CODE = """
import pandas as pd

df = pd.DataFrame({
    "temperature": [21.5, 23.1, 19.8, 25.4, 22.0, 24.7],
    "humidity": [45, 50, 62, 38, 55, 41],
})
print(df.describe())
"""

sandbox = Sandbox(template="base")

install = sandbox.process.start("pip install --quiet pandas")
install.wait()
if install.exit_code != 0:
    raise SystemExit(f"pip install pandas failed:\n{install.stderr}")

sandbox.filesystem.write("/home/user/analysis.py", CODE)
proc = sandbox.process.start("python3 /home/user/analysis.py")
proc.wait()
print(proc.stdout)

sandbox.close()
