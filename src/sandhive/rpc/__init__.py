"""Code generated from `proto/` by protoc-gen-py and protoc-gen-connectrpc (`make proto`).

The contract shared by envd (server side) and Sandhive's SDK (client side). Do not edit by hand.
"""
