"""The grading product: the submission in its own process, the grade only the grader writes.

- ``wire``: the plain-data protocol (no pickle); ``worker``: runs a submission's adapter and
  serves its verbs; ``launch``: root's last steps before a worker runs (hide, limit, drop);
  ``sandbox``: how a worker is started, fenced in and ended; ``client``: the adapter as the
  grader's specs see it, and the worker's supervision (timeouts from outside, restarts);
- ``runner``: ``python -m conformance grade``; ``rubric``, ``gradescope``, ``grade_all``,
  ``bundle`` and ``cli``: what course staff run.

The suite (specs, harness, adapter protocol, golden data, reference, plugin, report) lives
one level up; nothing in this package is imported by a worker except ``worker`` and ``wire``,
run from copies.
"""
