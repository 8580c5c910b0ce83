"""chain-packager: whole-chain ONNX artifacts for sentence-transformers module chains.

The build side (``packager.builder``, ``packager.chain``...) needs the ``build`` extra; the loader
(``packager.runtime``) needs only numpy, tokenizers and onnxruntime.
"""

__version__ = "0.1.0"
