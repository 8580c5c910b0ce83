"""``packager bench``: what to measure and how it is reported (``run``), the process that measures
one target (``worker``), and the speed loop the build's own figures use too (``speed``).

Nothing is imported here: ``python -m packager.bench.worker`` times its cold start from its own
first line.
"""
