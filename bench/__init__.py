"""wsgipipe's benchmark harness: ``python -m bench`` (``make bench``).

Speed claims come from here, never from a timed unit test. Every measurement
interleaves its contenders round by round, so drift on a shared machine hits
all of them alike, and every ratio is taken against a baseline measured in
the same round. See ``docs/benchmarks.md``.
"""
