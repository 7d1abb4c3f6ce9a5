"""repsim: compare what each layer of a network learned, across learning rules.

Submodules are imported on demand (``repsim.datasets``, ``repsim.rdm``, ...) so that
``python -m repsim.<analysis>`` starts fast; this file imports nothing heavy.
"""

__version__ = "0.1.0"
