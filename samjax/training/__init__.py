"""Training SAM with the paper's recipe: experiment configs (`config`), the input (`input`), initial parameters
(`init`), the interactive prompt simulation (`prompts`), losses, optimizers, the compiled update step (`step`), the
training state and its shardings (`state`), checkpoints (`checkpointing`), progressive-resizing stages (`stages`),
metrics and logging (`metrics`), and the run itself (`loop`). The command line is `python -m samjax.train`."""
