"""Evaluation on top of the scoring layer: datasets of multiple-choice items (`items`), the batch API (`batch`),
`evaluate` and its report (`report`), the comparison of several models (`compare`), parameter search (`search`)
and the lm-evaluation-harness adapter (`lm_eval`)."""
