"""dl-ch2 conformance: chapter 2 of Deep Learning with Python as executable specs.

``conformance.reference`` is the pure-NumPy oracle; nothing here imports torch.
"""
