"""dl_ch2_tools: the tooling around the port (``dl-ch2``, ``python -m dl_ch2_tools``).

``mnist`` (fetching, checking and loading MNIST: ``load_mnist``, the book's
``mnist.load_data()``), ``cli``, ``main_job`` (``dl-ch2 train``), ``weights``, ``figures``
and ``bench``. It imports the port (``dl_ch2``) and the conformance suite; neither imports
it. Of the suite it loads only the atomic writer (``conformance.atomic``) at import time,
the rest inside the functions that need it: ``dl-ch2 grade``, ``train --backend numpy``
and the benchmark's NumPy baseline.
"""
