"""The seed's and upstream chester's public API: ``run_experiment_lite`` and its
``VariantGenerator`` (:mod:`.run_exp`), the ``python -m chester.auto_pull`` poller
(:mod:`.auto_pull`). (The seed's ``chester.config`` attributes live in :mod:`chester.config`.)"""
