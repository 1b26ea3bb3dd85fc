"""The `sandhive` command: `serve` and `keys` on the server's host; `auth`, `sandbox` and `template` as a client."""
