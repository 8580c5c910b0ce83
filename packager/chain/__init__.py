"""Reading a saved chain: where it comes from and what is in it (``source``), its modules and
routes (``read``, ``spec``, the ``allow_list``), the checks before anything loads it (``weights``,
``config_paths``), what this version compiles (``compilable``), its torch reference (``reference``)
and each route as a torch module for export (``graph``, ``steps``, ``tokenizer``; these import torch).
"""

from packager.chain.compilable import check_compilable
from packager.chain.read import read_chain
from packager.chain.reference import load_reference
from packager.chain.source import Source, resolve_source
from packager.chain.spec import DEFAULT_ROUTE, ChainSpec, ModuleSpec

__all__ = ["DEFAULT_ROUTE", "ChainSpec", "ModuleSpec", "Source", "check_compilable", "load_reference", "read_chain",
           "resolve_source"]
