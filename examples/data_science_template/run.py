"""The seed's data-science example on its own template: pandas is in the image, nothing is installed here.

Build the template first, from this directory:
    sandhive template build --name data-science-sandbox
then run this file (with E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY pointing at a Sandhive server).
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

sandbox = Sandbox(template="data-science-sandbox")
sandbox.filesystem.write("/workspace/analysis.py", CODE)
proc = sandbox.process.start("python3 analysis.py")  # the template's WORKDIR, /workspace, is the default
proc.wait()
print(proc.stdout)
sandbox.close()
