"""ONNX training graphs as models (issue 12): `table` holds the supported-operator table and
`patterns` the subgraphs fused into one `ops` call; `protocol.onnx_model` parses, validates and
interprets a graph with them. Nothing is imported here, so importing one part never drags in the
others (and `import onnx` below this package still names the onnx library: imports are absolute).
"""
