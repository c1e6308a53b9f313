"""The steps of the DVC pipeline (``dvc.yaml``), one command per stage.

    python -m srpo_bench.pipeline datasets --params params.yaml --env hopper
    python -m srpo_bench.pipeline train    --params params.yaml --task hopper-medium --stage behavior
    python -m srpo_bench.pipeline policy   --params params.yaml --task hopper-medium --variant srpo
    python -m srpo_bench.pipeline evaluate --params params.yaml --task hopper-medium --seed 0 --variant srpo
    python -m srpo_bench.pipeline report   --params params.yaml

Every knob comes from the profile's params file (``params.yaml`` for the default
profile, ``pipelines/<profile>/params.yaml`` for the others), read into
:class:`PipelineParams`; the file is validated before any work starts. Paths in it are
relative to the repository root, where DVC runs every stage.

Training steps train every seed of a task in one process, seeds as a batch dimension
(:mod:`srpo.fast.seed_batch`); each seed still gets its own checkpoint, as a single run would.
Layout of a profile's outputs::

    <data_dir>/minari/srpo/<env>/<kind>-v0               generated datasets (Minari store), task =
    <env>-<kind>
    <run_dir>/<task>/behavior/seed<S>/behavior.pt         shared by all policy variants of the run
    <run_dir>/<task>/critic/seed<S>/critic.pt             shared by all policy variants of the run
    <run_dir>/<task>/policy/<variant>/seed<S>/policy.pt
    <run_dir>/<task>/evaluation/<variant>/seed<S>.json
    <report_dir>/report.md, metrics.json, figures/, plots/

Modules: :mod:`.steps` (one function per stage), :mod:`.caching` (which finished checkpoints a
stage may reuse), :mod:`.cli` (the command line above); the params are :mod:`srpo_bench.params`.
"""
