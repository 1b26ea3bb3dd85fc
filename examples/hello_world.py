"""The seed's hello world: start a sandbox, run a command in it, print its output.

Run with a server up (`make up`, as root) and SANDHIVE_API_KEY set (`sandhive keys create`).
"""

from sandhive import Sandbox

with Sandbox() as sandbox:
    proc = sandbox.process.start("echo 'Hello from Sandhive!'")
    proc.wait()
    print(proc.stdout)
