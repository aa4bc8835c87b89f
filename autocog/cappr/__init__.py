"""CAPPr 0.9.6's API (``cappr``: Completion After Prompt Probability) on autocog's scoring layer.

Switching is one import line: ``from cappr.huggingface.classify import predict_proba`` becomes ``from
autocog.cappr.huggingface.classify import predict_proba`` (likewise ``llama_cpp``, ``openai``). Same functions,
signatures, defaults, outputs and input checks; the numbers come from `autocog.lm.scoring.score_tokens` (one
pass over each prompt's shared-KV token trie). See docs/cappr.md.

>>> from autocog.cappr.huggingface.classify import predict_proba        # doctest: +SKIP
>>> predict_proba(["The sky is"], ["blue", "green"], model_and_tokenizer=(model, tokenizer))  # doctest: +SKIP
array([[0.8, 0.2]])
"""

from autocog.cappr.example import Example

__all__ = ["Example"]
