"""The built-in adapters: ``numpy`` (the reference) and ``torch-cpu`` / ``torch-cuda`` (dl_ch2)."""
