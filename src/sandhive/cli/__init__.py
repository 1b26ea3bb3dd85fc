"""The `sandhive` command: `serve` runs the control plane, `keys` manages API keys."""
