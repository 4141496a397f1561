"""Slurm: sbatch scripts for a Ray cluster and for ``gpu_slurm`` tasks, the one wrapper around
Slurm's commands, and one watcher for every tracked job.

* :mod:`rayinfra.slurm.render` — pure sbatch renderers (cluster job, task job from a template);
* :mod:`rayinfra.slurm.cli` — ``sbatch``/``squeue``/``sacct``/``scontrol``/``scancel``, sync and
  async, typed errors (:mod:`rayinfra.slurm.errors`);
* :mod:`rayinfra.slurm.states` — pure parsing of their output and state normalisation;
* :mod:`rayinfra.slurm.watcher` — polls all tracked jobs in one query, with backoff.

Importing this package imports none of them.
"""
