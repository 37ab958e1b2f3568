"""Parts of ``benchmarks/e2e_speed.py`` (the entry point and its docs):
``models`` (the two models, one step of each), ``timing`` (interleaved
rounds), ``workers`` (memory and compile in fresh processes), ``phases``
(FLOPs, conv throughput, the profile) and ``tables`` (the report)."""
