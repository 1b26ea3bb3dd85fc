"""The node: everything that runs sandboxes on one host (root).

`runtime.py` is the contract every isolation backend implements (container, gvisor, microvm are peers
behind it); `node.py` puts a runtime together with templates and envd's `/init` so that the API asks
for "a sandbox of template T with these limits" and gets back where it lives.
"""
