"""Evaluation and inference on a frozen model with one prompt, several, or one per task
(docs/design.md, "Evaluation").

Every metric the project reports comes from `seqio.Evaluator`: `evaluator.py` hands it
model functions that batch its cached datasets through the jitted model (on a
`partitioning.Partitioner` mesh when one is given), for the periodic evaluation during
training and for `prompt-tuning eval`. `ensemble.py` decodes N prompts in one call per
batch and gives the evaluator each prompt's decodes, and the majority vote's, in turn.
`run_eval.py` holds the gin-configured `eval` and `infer` jobs; inference (one prompt,
or several tasks served together) uses the same batching and decode.
"""
