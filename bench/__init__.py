"""Benchmarks and chaos for Co-sell Sync: ``python -m bench run|chaos``.

``run`` measures every target of SPEC section 11 and writes ``bench/README.md`` (and
``bench/latency.png``); ``chaos`` drives the whole sandbox through faults and host kills and
checks that both systems converge with no lost edit and no duplicate.
"""
