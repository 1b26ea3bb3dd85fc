"""Sandhive as an MCP server: an agent's MCP client gets tools that create, use and kill sandboxes.

A client of the API like the CLI, built on Sandhive's own SDK (`sandhive.sdk`); it imports nothing from `api`
or `node`. `sandhive mcp` (cli/mcp_cmd.py) is its face: stdio for one user's agent, `--http ADDR` for many
(each request carries its own API key). See docs/mcp.md.
"""
