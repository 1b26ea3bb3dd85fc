"""The code interpreter's in-sandbox server: E2B's port-49999 contract (wire doc §4) over Jupyter kernels.

It runs inside sandboxes of the built-in template `code-interpreter-v1` (`templates.code_interpreter`), never
on the host: `server` drives ipykernel processes with `jupyter_client` and serves HTTP with tornado (both
installed in the template, not in Sandhive's own environment). `messages` is the pure part — Jupyter IOPub
messages in, E2B's NDJSON lines out — and imports nothing outside the standard library, so the host's unit
tests check it. `charts` turns a matplotlib figure into E2B's `e2b/chart` in the kernel; its mapping is pure too.
Like `envd`, this package imports nothing from the rest of Sandhive.
"""

PORT = 49999
