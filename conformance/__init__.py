"""dl-ch2 conformance: chapter 2 of Deep Learning with Python as executable specs.

``conformance.reference`` is the pure-NumPy oracle; nothing in this package imports torch
except the ``torch-cpu`` / ``torch-cuda`` adapters.
"""

__version__ = "0.1.0"
