"""envd: the in-sandbox daemon.

It speaks E2B's envd protocol (Connect RPC `process.Process` and `filesystem.Filesystem`, plus the
`/files`, `/health`, `/init`, `/envs` and `/metrics` HTTP routes) so that the released `e2b` SDKs
work against a Sandhive sandbox unchanged. It stands alone: it imports nothing from Sandhive's
api, node or sdk packages, only the generated contract in `sandhive.rpc`.
"""

# The envd version whose SDK feature gates this daemon really implements (see docs/wire.md §3.7):
# recursive watch, metrics, stdin off, default user, CloseStdin, octet-stream and gzip uploads,
# file metadata, entries in watch events and allow_network_mounts.
ENVD_VERSION = "0.6.4"
