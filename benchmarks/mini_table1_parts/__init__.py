"""Parts of ``benchmarks/mini_table1.py`` (the entry point and its docs),
one job each, so that a method or a claim is added in one place:

* ``regimes``: the data (synthetic shapes rendered in memory), the small
  RetinaNet and the schedule of each regime, and the imbalance measured on
  the training data;
* ``methods``: the methods (config overrides) and their paper cells;
* ``run``: one run -- train, evaluate, record, reuse;
* ``claims``: the paper's claims and their verdicts from the per-seed APs;
* ``tables``: the tables, the loss-curve figure and the results record;
* ``cli``: the arguments and the parallel, resumable driver.
"""
