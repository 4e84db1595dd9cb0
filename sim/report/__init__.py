"""Diagnosis after the run: the three-layer online/offline report, attribution, sweeps.

``python -m sim.report DIR`` (see ``__main__``). Modules: ``evidence`` (the numbers, from
``metrics.json``), ``verdicts`` (one rule per hypothesis), ``plots``, ``document`` (the Markdown),
``run_report`` (one run), ``attribution`` (worlds with hazards switched off, Shapley values),
``sweep`` (a Hydra multirun). Nothing here is imported by the simulation.
"""
