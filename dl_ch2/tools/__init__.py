"""Tooling around the chapter: data fetching, the CLI, the main job, figures and benchmarks.

Nothing in the chapter's modules (``dl_ch2/*.py``) imports this package's command-line or
benchmark code; this layer imports the chapter, and imports the conformance suite lazily,
only for ``dl-ch2 grade`` and ``dl-ch2 train --backend numpy``.
"""
