"""Many hosts: `sandhive node` daemons behind a control plane (docs/architecture.md "Many hosts").

`models` is the node API's wire (shared by both sides), `node_api` its server (one per host, owning a `Node`),
`remote_node` the control plane's client that the API uses in place of an embedded `Node`.
"""
